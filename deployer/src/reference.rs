//! Image references and digests, parsed and checked once: every digest or reference that comes
//! from a person, a registry or a file goes through here, so no later code slices a string that
//! might be shorter than it expects.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("`{0}` is not a sha256 digest (sha256: and 64 lower-case hex digits)")]
    Digest(String),
    #[error("`{reference}` is not an image reference: {why}")]
    Reference {
        reference: String,
        why: &'static str,
    },
}

/// `sha256:` and 64 lower-case hex digits: the only digests we accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, ReferenceError> {
        let ok = text.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Digest(text.to_string()))
        } else {
            Err(ReferenceError::Digest(text.chars().take(100).collect()))
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(data);
        let mut out = String::with_capacity(71);
        out.push_str("sha256:");
        for b in hash {
            out.push_str(&format!("{b:02x}"));
        }
        Digest(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex digits, for people and directory names.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }

    /// A tag that names exactly this digest (`sha256-<hex>`): tags are immutable in our
    /// repositories, and one derived from the whole digest can never name other content.
    pub fn tag(&self) -> String {
        format!("sha256-{}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image pinned by digest: `[REGISTRY/]REPOSITORY[:TAG]@sha256:HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `123456789012.dkr.ecr.eu-west-1.amazonaws.com`, `127.0.0.1:5000`; none for Docker Hub.
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Digest,
}

/// A private ECR repository, as its registry host names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRepository {
    pub account: String,
    pub region: String,
    pub name: String,
    /// `aws`, `aws-cn`, `aws-us-gov`.
    pub partition: &'static str,
}

impl EcrRepository {
    pub fn arn(&self) -> String {
        format!(
            "arn:{}:ecr:{}:{}:repository/{}",
            self.partition, self.region, self.account, self.name
        )
    }
}

fn valid_component(part: &str) -> bool {
    // distribution's path-component: [a-z0-9]+ joined by ".", "_", "__" or runs of "-".
    let bytes = part.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() {
        return false;
    }
    if !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut run = String::new();
    for c in part.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if !(run.is_empty()
                || run == "."
                || run == "_"
                || run == "__"
                || run.chars().all(|r| r == '-'))
            {
                return false;
            }
            run.clear();
        } else if matches!(c, '.' | '_' | '-') {
            run.push(c);
        } else {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, ReferenceError> {
        let bad = |why| ReferenceError::Reference {
            reference: text.chars().take(300).collect(),
            why,
        };
        if text.len() > 1024 {
            return Err(bad("longer than 1024 characters"));
        }
        let (name, digest) = text
            .split_once('@')
            .ok_or_else(|| bad("it is not pinned: add @sha256:DIGEST"))?;
        let digest = Digest::parse(digest)?;
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        if let Some(r) = &registry
            && !r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(bad("the registry host has characters a host cannot"));
        }
        // A tag's colon comes after the last slash (a registry's port is before it).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        if repository.is_empty() || repository.len() > 255 {
            return Err(bad("the repository name is empty or too long"));
        }
        if !repository.split('/').all(valid_component) {
            return Err(bad(
                "the repository is lower-case letters, digits and . _ - between slashes",
            ));
        }
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(bad("the tag is 1-128 letters, digits, _ . -"));
        }
        Ok(ImageRef {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The private ECR repository this names, if it names one.
    pub fn ecr(&self) -> Option<EcrRepository> {
        let host = self.registry.as_deref()?;
        let (account, rest) = host.split_once(".dkr.")?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let rest = rest
            .strip_prefix("ecr.")
            .or_else(|| rest.strip_prefix("ecr-fips."))?;
        let (region, partition) = if let Some(r) = rest.strip_suffix(".amazonaws.com.cn") {
            (r, "aws-cn")
        } else {
            let r = rest.strip_suffix(".amazonaws.com")?;
            let partition = if r.starts_with("us-gov-") {
                "aws-us-gov"
            } else {
                "aws"
            };
            (r, partition)
        };
        if region.is_empty() || region.contains('.') {
            return None;
        }
        Some(EcrRepository {
            account: account.to_string(),
            region: region.to_string(),
            name: self.repository.clone(),
            partition,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        write!(f, "@{}", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn digests_are_checked_not_sliced() {
        assert!(Digest::parse(D).is_ok());
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            "sha512:9f86",
            &D.to_uppercase(),
            &format!("{D}0"),
            "sha256:ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        let d = Digest::parse(D).expect("digest");
        assert_eq!(d.short(), "9f86d081884c");
        assert_eq!(d.tag().len(), 71);
        assert_eq!(Digest::of(b"test"), d);
    }

    #[test]
    fn references_parse_and_name_their_ecr_repository() {
        let r = ImageRef::parse(&format!(
            "210987654321.dkr.ecr.us-east-1.amazonaws.com/team/api:v2@{D}"
        ))
        .expect("ref");
        assert_eq!(r.repository, "team/api");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        let ecr = r.ecr().expect("ecr");
        assert_eq!(
            ecr.arn(),
            "arn:aws:ecr:us-east-1:210987654321:repository/team/api"
        );
        let local = ImageRef::parse(&format!("127.0.0.1:5000/tickstream@{D}")).expect("ref");
        assert_eq!(local.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(local.tag, None);
        assert!(local.ecr().is_none());
        let hub = ImageRef::parse(&format!("library/alpine:3.23@{D}")).expect("ref");
        assert_eq!(hub.registry, None);
        assert_eq!(hub.to_string(), format!("library/alpine:3.23@{D}"));
        let cn = ImageRef::parse(&format!(
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/x@{D}"
        ))
        .expect("ref");
        assert_eq!(cn.ecr().expect("ecr").partition, "aws-cn");
    }

    #[test]
    fn malformed_references_are_errors() {
        for bad in [
            "tickstream".to_string(),
            "tickstream:latest".to_string(),
            format!("Tickstream@{D}"),
            format!("a//b@{D}"),
            format!("a/b:@{D}"),
            format!("-a@{D}"),
            format!("host.example/a b@{D}"),
            "x@sha256:short".to_string(),
            format!("@{D}"),
        ] {
            assert!(ImageRef::parse(&bad).is_err(), "{bad}");
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)))]

            /// Any text: a digest or a typed error; a digest prints as it was given.
            #[test]
            fn any_text_is_a_digest_or_an_error(text in prop_oneof![".{0,80}", "sha256:[0-9a-fA-F]{60,68}"]) {
                if let Ok(d) = Digest::parse(&text) {
                    prop_assert_eq!(d.to_string(), text);
                    prop_assert_eq!(d.hex().len(), 64);
                }
            }

            /// Any text: an image reference or a typed error; a reference prints back to
            /// one that parses the same.
            #[test]
            fn any_text_is_a_reference_or_an_error(
                text in prop_oneof![
                    ".{0,120}",
                    "([a-z0-9.:-]{1,20}/)?[a-z0-9/._-]{1,30}(:[A-Za-z0-9._-]{1,10})?@sha256:[0-9a-f]{64}",
                ],
            ) {
                if let Ok(r) = ImageRef::parse(&text) {
                    let again = ImageRef::parse(&r.to_string());
                    prop_assert_eq!(again.map(|a| a.to_string()).ok(), Some(r.to_string()));
                }
            }
        }
    }
}

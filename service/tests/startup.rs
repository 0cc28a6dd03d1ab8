//! What a person sees when the server cannot start: each error once, its cause once, and what
//! to do, as the exact lines (text), or as one JSON log line for CloudWatch. A change of
//! wording is a change here.

use std::net::TcpListener;
use std::process::Command;

/// Runs the real binary with `args` and only `vars` set; returns the exit code and stderr.
fn run(args: &[&str], vars: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickstream"));
    cmd.args(args).env_clear();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tickstream");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The text form exactly, and the JSON form as one line carrying the same message and fix.
fn expect(args: &[&str], vars: &[(&str, &str)], message: &str, fix: &str) {
    let (code, text) = run(args, vars);
    assert_eq!(
        text,
        format!("tickstream: {message}\n  fix: {fix}\n"),
        "{args:?}"
    );
    assert_eq!(code, 1);
    let mut json_args = args.to_vec();
    json_args.extend(["--log-format", "json"]);
    let (code, json) = run(&json_args, vars);
    assert_eq!(code, 1);
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {json}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["message"], message);
    assert_eq!(line["fix"], fix);
}

#[test]
fn a_bad_flag_is_said_once_by_the_parser() {
    let (code, text) = run(&["--sim-rate", "lots"], &[]);
    assert_eq!(code, 2);
    assert_eq!(
        text,
        "error: invalid value 'lots' for '--sim-rate <SIM_RATE>': invalid digit found in string\n\n\
         For more information, try '--help'.\n"
    );
    expect(
        &["--sim-rate", "5000"],
        &[],
        "--sim-rate must be 0..=1000, got 5000",
        "`tickstream --help` lists every flag, its variable and its range",
    );
    expect(
        &[],
        &[("PORT", "eighty")],
        "PORT=\"eighty\" is not a port number",
        "set PORT to a number from 1 to 65535, or use --listen ADDRESS:PORT",
    );
}

#[test]
fn replay_files_that_cannot_be_played() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.ndjson");
    expect(
        &["--replay", missing.to_str().expect("utf-8")],
        &[],
        &format!(
            "cannot read the replay file {}: No such file or directory (os error 2)",
            missing.display()
        ),
        "check the path given to --replay (TICKSTREAM_REPLAY)",
    );
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"channel\":\"ticker\",\"symbol\":\"AAPL\",\"ts\":1,\"data\":{\"price\":\"1.00\"}}\nnot json\n",
    )
    .expect("write");
    let (code, text) = run(&["--replay", bad.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 1);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("tickstream: {}:", bad.display())),
        "names the file and line: {text}"
    );
    assert_eq!(text.lines().count(), 2, "the error and its fix: {text}");
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("  fix: fix or remove that line")),
        "{text}"
    );
}

#[test]
fn a_port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    expect(
        &["--listen", &addr.to_string()],
        &[],
        &format!("cannot listen on {addr}: the address is already in use"),
        &format!(
            "stop what listens there (`ss -ltnp 'sport = :{}'` shows it), or listen elsewhere: --listen 127.0.0.1:PORT (or PORT=...)",
            addr.port()
        ),
    );
}

#[test]
fn a_bad_api_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("keys");
    let fix = "check --api-keys-file (TICKSTREAM_API_KEYS_FILE): one key per line, blank lines and # comments ignored";
    expect(
        &["--api-keys-file", missing.to_str().expect("utf-8")],
        &[],
        &format!(
            "cannot read the API-key file {}: No such file or directory (os error 2)",
            missing.display()
        ),
        fix,
    );
    std::fs::write(&missing, "# no keys yet\n\n").expect("write");
    expect(
        &[],
        &[("TICKSTREAM_API_KEYS_FILE", missing.to_str().expect("utf-8"))],
        &format!(
            "cannot read the API-key file {}: it holds no keys",
            missing.display()
        ),
        fix,
    );
}

//! The `infra/` templates deployed into the local AWS (`localstack/local-aws`) through the AWS
//! SDK for Rust: created, read, left alone when nothing changed, updated when something did.
//! `scripts/check` starts the emulator and sets `TICKSTREAM_LOCAL_AWS`; without it this test
//! fails, naming the command to run.

use std::collections::BTreeMap;
use std::time::Duration;

use tickstream_deployer::aws::{self, AwsTarget};
use tickstream_deployer::report::Reporter;
use tickstream_deployer::stacks::{self, StackChange, StackSpec, Waiting};

const WAIT: Waiting = Waiting {
    timeout: Duration::from_secs(60),
    poll: Duration::from_millis(200),
};

fn endpoint() -> String {
    let url = std::env::var("TICKSTREAM_LOCAL_AWS")
        .unwrap_or_else(|_| panic!("TICKSTREAM_LOCAL_AWS is not set: run ./scripts/check, or `localstack/local-aws start` and set it to http://127.0.0.1:4566"));
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "tests only talk to 127.0.0.1, not {url}"
    );
    url
}

fn template(name: &str) -> String {
    let path = format!("{}/../infra/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn spec(name: String, file: &str, parameters: &[(&str, &str)]) -> StackSpec {
    StackSpec {
        name,
        template_body: template(file),
        parameters: parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        named_iam: false,
    }
}

async fn client(region: &str) -> aws_sdk_cloudformation::Client {
    let target = AwsTarget {
        endpoint_url: Some(endpoint()),
        emulator_credentials: true,
        region: Some(region.to_string()),
        ..AwsTarget::default()
    };
    aws_sdk_cloudformation::Client::new(&aws::load(&target).await)
}

/// Both stacks of one app's environment, created and complete.
async fn both_stacks(
    client: &aws_sdk_cloudformation::Client,
    app: &str,
    env: &str,
) -> BTreeMap<String, String> {
    let network = spec(
        format!("{app}-{env}-network"),
        "network.yaml",
        &[("AppName", app), ("EnvironmentName", env)],
    );
    let net = stacks::deploy(client, &network, WAIT, &Reporter::recording())
        .await
        .unwrap_or_else(|e| panic!("{app}/{env} network: {e}"));
    let platform = spec(
        format!("{app}-{env}-platform"),
        "platform.yaml",
        &[
            ("AppName", app),
            ("EnvironmentName", env),
            ("VpcId", &net.outputs["VpcId"]),
            ("PublicSubnetIds", &net.outputs["PublicSubnetIds"]),
        ],
    );
    let plat = stacks::deploy(client, &platform, WAIT, &Reporter::recording())
        .await
        .unwrap_or_else(|e| panic!("{app}/{env} platform: {e}"));
    assert_eq!(plat.change, StackChange::Created);
    plat.outputs
}

#[tokio::test]
async fn the_templates_deploy_read_back_and_update_only_on_change() {
    let client = client("us-east-1").await;
    // A fresh environment name per run: the emulator may hold earlier runs' stacks.
    let env = format!("t{}", std::process::id());

    let network = spec(
        format!("{env}-network"),
        "network.yaml",
        &[("EnvironmentName", &env)],
    );
    let net = stacks::deploy(&client, &network, WAIT, &Reporter::recording())
        .await
        .expect("network stack");
    assert_eq!(net.change, StackChange::Created);
    let vpc = net.outputs["VpcId"].clone();
    let subnets = net.outputs["PublicSubnetIds"].clone();
    assert!(vpc.starts_with("vpc-"), "{:?}", net.outputs);
    assert_eq!(subnets.split(',').count(), 2, "two zones");
    assert_eq!(net.outputs["TasksNeedPublicIp"], "ENABLED");

    let platform_params = [
        ("EnvironmentName", env.as_str()),
        ("VpcId", vpc.as_str()),
        ("PublicSubnetIds", subnets.as_str()),
    ];
    let platform = spec(format!("{env}-platform"), "platform.yaml", &platform_params);
    let plat = stacks::deploy(&client, &platform, WAIT, &Reporter::recording())
        .await
        .expect("platform stack");
    assert_eq!(plat.change, StackChange::Created);
    let o: &BTreeMap<String, String> = &plat.outputs;
    assert_eq!(o["ClusterName"], format!("tickstream-{env}"));
    assert_eq!(o["LogGroupName"], format!("/tickstream/{env}/service"));
    assert_eq!(o["ContainerPort"], "8080");
    assert!(
        o["WebSocketUrl"].starts_with("ws://") && o["WebSocketUrl"].ends_with("/ws"),
        "{o:?}"
    );
    for key in [
        "TargetGroupArn",
        "TaskSecurityGroupId",
        "ExecutionRoleArn",
        "TaskRoleArn",
        "LoadBalancerDnsName",
    ] {
        assert!(
            o.get(key).is_some_and(|v| !v.is_empty()),
            "output {key} in {o:?}"
        );
    }

    // Deploying what is already there changes nothing.
    assert_eq!(
        stacks::deploy(&client, &network, WAIT, &Reporter::recording())
            .await
            .expect("again")
            .change,
        StackChange::Unchanged
    );
    let again = stacks::deploy(&client, &platform, WAIT, &Reporter::recording())
        .await
        .expect("again");
    assert_eq!(again.change, StackChange::Unchanged);
    assert_eq!(&again.outputs, o);

    // A changed parameter updates the stack and its outputs.
    let mut moved = platform.clone();
    moved
        .parameters
        .insert("ContainerPort".into(), "9090".into());
    let updated = stacks::deploy(&client, &moved, WAIT, &Reporter::recording())
        .await
        .expect("update");
    assert_eq!(updated.change, StackChange::Updated);
    assert_eq!(updated.outputs["ContainerPort"], "9090");
    assert_eq!(
        updated.outputs["ClusterName"], o["ClusterName"],
        "the cluster is not replaced"
    );
    assert_eq!(
        stacks::deploy(&client, &moved, WAIT, &Reporter::recording())
            .await
            .expect("again")
            .change,
        StackChange::Unchanged
    );
}

/// IAM role names are global to an account, export, load balancer and target group names are
/// per region: two apps, and one app in two regions, must all fit in one account.
#[tokio::test]
async fn two_apps_and_two_regions_share_one_account() {
    let env = format!("n{}", std::process::id() % 100_000);
    let here = client("us-east-1").await;
    let there = client("eu-west-1").await;
    let a = both_stacks(&here, "alpha", &env).await;
    let b = both_stacks(&here, "beta", &env).await;
    let a_elsewhere = both_stacks(&there, "alpha", &env).await;
    for key in [
        "ExecutionRoleArn",
        "TaskRoleArn",
        "TargetGroupArn",
        "LoadBalancerDnsName",
    ] {
        let values = [&a[key], &b[key], &a_elsewhere[key]];
        assert!(
            values[0] != values[1] && values[0] != values[2] && values[1] != values[2],
            "{key} collides: {values:?}"
        );
    }
    assert_eq!(a["ClusterName"], format!("alpha-{env}"));
    assert_eq!(b["LogGroupName"], format!("/beta/{env}/service"));
}

//! Resume where it used to go wrong: a position the stream cannot have must behave as an
//! unrecoverable one (a fresh start), not starve the stream forever. (A long replay into a fresh
//! connection is tested on the peer itself, `ws::peer::tests`, where the socket can be made to
//! block for certain.)

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_position_the_stream_cannot_have_is_a_fresh_start() {
    let server = start(|c| c.sim_rate = 50).await;
    let mut ws = server.connect("").await;
    let epoch = server.state.hub.epoch().to_string();
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "symbols": ["AAPL"], "channels": ["ticker"],
               "epoch": epoch, "resume": {"ticker:AAPL": u64::MAX}}),
    )
    .await;
    let ack = recv_control(&mut ws).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["streams"][0]["recovered"], false, "{ack}");
    let now = ack["streams"][0]["seq"].as_u64().expect("seq");
    assert!(
        now < u64::MAX / 2,
        "the stream's own position, not the client's: {ack}"
    );
    let snapshot = recv(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["seq"], now);
    // And then the stream flows, contiguous from the snapshot.
    for expected in now + 1..=now + 3 {
        let update = recv(&mut ws).await;
        assert_eq!(update["type"], "update", "{update}");
        assert_eq!(update["seq"], expected, "{update}");
    }
}

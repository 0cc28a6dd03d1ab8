//! `deploy logs` against CloudWatch's paging as it is: events come oldest first, a page at a
//! time, so the newest lines of a busy service are not the first ones read.

use aws_smithy_mocks::{RuleMode, mock, mock_client};

#[tokio::test]
async fn logs_show_the_newest_lines_of_a_busy_service() {
    use aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsOutput;
    use aws_sdk_cloudwatchlogs::types::FilteredLogEvent;
    // Two lines a second for two hours: 14,400 events, served oldest first, 1,000 a page.
    let now: i64 = 1_800_000_000_000;
    let first = now - 2 * 3600 * 1000;
    let filter =
        mock!(aws_sdk_cloudwatchlogs::Client::filter_log_events).then_compute_output(move |req| {
            let from = req.start_time().unwrap_or(first).max(first);
            let page: i64 = req.next_token().and_then(|t| t.parse().ok()).unwrap_or(0);
            let at = |i: i64| from + i * 500;
            let events: Vec<FilteredLogEvent> = (page * 1000..(page + 1) * 1000)
                .filter(|i| at(*i) <= now)
                .map(|i| {
                    FilteredLogEvent::builder()
                        .event_id(format!("{}", at(i)))
                        .timestamp(at(i))
                        .log_stream_name("tickstream/tickstream/abc")
                        .message(format!("line at {}", at(i)))
                        .build()
                })
                .collect();
            let more = at((page + 1) * 1000) <= now;
            let mut out = FilterLogEventsOutput::builder().set_events(Some(events));
            if more {
                out = out.next_token(format!("{}", page + 1));
            }
            out.build()
        });
    let logs = mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, [&filter]);
    let lines = tickstream_deployer::commands::newest(
        &logs,
        "/tickstream/dev/service",
        "tickstream/",
        first,
        now,
        5,
    )
    .await
    .expect("read");
    let stamps: Vec<i64> = lines.iter().filter_map(|e| e.timestamp()).collect();
    assert_eq!(stamps, [now - 2000, now - 1500, now - 1000, now - 500, now]);
    // It read the last minute, not two hours.
    assert!(filter.num_calls() <= 2, "{} calls", filter.num_calls());
}

//! The detector's gRPC port over a real socket on 127.0.0.1: the Collector stream with its
//! acknowledgements and rejections, the bearer token, and the standard health and
//! reflection services.

mod support;

use support::{start, within};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};
use vigil_proto::v1::collector_client::CollectorClient;
use vigil_proto::v1::{AckStatus, Report};

fn report(seq: u64, minute: i64, lines: u64) -> Report {
    support::minute_report("test-instance", seq, minute, lines)
}

fn now_minute() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(secs / 60 * 60).expect("time")
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

#[tokio::test]
async fn reports_are_acknowledged_in_order_and_bad_ones_rejected_without_dropping_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path(), "", None).await;
    let mut client = CollectorClient::new(running.channel.clone());
    let (tx, rx) = mpsc::channel(16);
    let mut acks = within(
        "the detector to answer the stream",
        client.stream(Request::new(ReceiverStream::new(rx))),
    )
    .await
    .expect("stream")
    .into_inner();
    let minute = now_minute();
    // seq 2 is invalid (not on a minute boundary); seq 1 comes again at the end.
    let bad = report(2, minute + 30, 1);
    for r in [
        report(1, minute, 10),
        bad,
        report(3, minute, 5),
        report(1, minute, 10),
    ] {
        tx.send(r).await.expect("send");
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ack = within("an ack", acks.message())
            .await
            .expect("ack")
            .expect("open stream");
        seen.push((ack.seq, ack.status(), ack.error));
    }
    assert_eq!(seen[0], (1, AckStatus::Stored, String::new()));
    assert_eq!(seen[1].0, 2);
    assert_eq!(seen[1].1, AckStatus::Rejected);
    assert!(seen[1].2.contains("multiple of 60"), "{:?}", seen[1]);
    assert_eq!(seen[2], (3, AckStatus::Stored, String::new()));
    assert_eq!(seen[3], (1, AckStatus::Duplicate, String::new()));
}

#[tokio::test]
async fn a_stream_without_the_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path(), "", Some("s3cret")).await;
    let mut client = CollectorClient::new(running.channel.clone());

    let (_tx, rx) = mpsc::channel::<Report>(1);
    let status = within(
        "the detector to answer the stream",
        client.stream(Request::new(ReceiverStream::new(rx))),
    )
    .await
    .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let (_tx, rx) = mpsc::channel::<Report>(1);
    let status = within(
        "the detector to answer the stream",
        client.stream(bearer(ReceiverStream::new(rx), "wrong")),
    )
    .await
    .expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let (tx, rx) = mpsc::channel::<Report>(1);
    let mut acks = within(
        "the detector to answer the stream",
        client.stream(bearer(ReceiverStream::new(rx), "s3cret")),
    )
    .await
    .expect("right token")
    .into_inner();
    tx.send(report(1, now_minute(), 3)).await.expect("send");
    let ack = within("an ack", acks.message())
        .await
        .expect("ack")
        .expect("open");
    assert_eq!(ack.status(), AckStatus::Stored);
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path(), "", None).await;
    let mut health = HealthClient::new(running.channel.clone());
    let status = within(
        "the health check",
        health.check(HealthCheckRequest {
            service: "vigil.v1.Collector".into(),
        }),
    )
    .await
    .expect("health check")
    .into_inner()
    .status();
    assert_eq!(status, ServingStatus::Serving);

    let mut reflection = ServerReflectionClient::new(running.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = within(
        "the reflection stream",
        reflection.server_reflection_info(tokio_stream::iter([request])),
    )
    .await
    .expect("reflection")
    .into_inner();
    let response = within("the reflection answer", responses.message())
        .await
        .expect("message")
        .expect("one");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"vigil.v1.Collector".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn an_oversized_report_is_refused_with_a_clear_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path(), "", None).await;
    let mut client = CollectorClient::new(running.channel.clone());
    let (tx, rx) = mpsc::channel(4);
    let mut acks = within(
        "the detector to answer the stream",
        client.stream(Request::new(ReceiverStream::new(rx))),
    )
    .await
    .expect("stream")
    .into_inner();
    let mut huge = report(1, now_minute(), 1);
    huge.host = "h".repeat(5 * 1024 * 1024);
    tx.send(huge).await.expect("send");
    let status = within("the end of the stream", acks.message())
        .await
        .expect_err("an oversized report ends the stream");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("message length too large"),
        "{status:?}"
    );
}

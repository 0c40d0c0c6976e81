//! The verifier's side of WatchRevocations, against a scripted KeyService (a real gRPC server
//! on 127.0.0.1:0) so a test decides exactly what the stream says and when: a backlog still
//! in flight, a malformed event, silence. auth-service itself never sends the last two.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use auth_service::testing::TEST_VERIFIER_TOKEN;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_token::TokenVerifier;
use miniprogram_token::{SigningKey, Timestamp};
use pb::key_service_server::{KeyService, KeyServiceServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use userinfo_service::error::UserInfoError;
use userinfo_service::grpc::auth_client::{self, AuthServiceLink, CALL_TIMEOUT};
use userinfo_service::userinfo::KeySource;

use super::{TestUserInfoServer, eventually};

type Sent = Result<pb::WatchRevocationsResponse, Status>;

/// One WatchRevocations call the scripted server received: where it asked to resume, and
/// the sender that writes its stream.
struct OpenedStream {
    after_sequence: u64,
    messages: mpsc::Sender<Sent>,
}

impl OpenedStream {
    async fn send(&self, message: pb::WatchRevocationsResponse) {
        self.messages.send(Ok(message)).await.expect("stream open");
    }
}

struct ScriptedKeyService {
    opened: mpsc::UnboundedSender<OpenedStream>,
    /// When set, ListTokenKeys never answers (a peer that accepted the call and went quiet).
    keys_never_answer: bool,
}

fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.seconds_and_nanos();
    prost_types::Timestamp { seconds, nanos }
}

#[tonic::async_trait]
impl KeyService for ScriptedKeyService {
    async fn list_token_keys(
        &self,
        _request: Request<pb::ListTokenKeysRequest>,
    ) -> Result<Response<pb::ListTokenKeysResponse>, Status> {
        if self.keys_never_answer {
            std::future::pending::<()>().await;
        }
        let now = Timestamp::now();
        let key = SigningKey::generate(
            "k1".into(),
            now,
            now.saturating_add(Duration::from_secs(3600)),
            now.saturating_add(Duration::from_secs(7200)),
        )
        .map_err(|_| Status::internal("key"))?;
        Ok(Response::new(pb::ListTokenKeysResponse {
            keys: vec![pb::TokenKey {
                key_id: "k1".into(),
                public_key: key.verifying.public_key.to_vec(),
                subject_key: key.verifying.subject_key.to_vec(),
                create_time: Some(timestamp(now)),
                retire_time: Some(timestamp(now.saturating_add(Duration::from_secs(3600)))),
                expire_time: Some(timestamp(now.saturating_add(Duration::from_secs(7200)))),
            }],
            current_key_id: "k1".into(),
        }))
    }

    type WatchRevocationsStream = ReceiverStream<Sent>;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let _ = self.opened.send(OpenedStream {
            after_sequence: request.into_inner().after_sequence,
            messages: tx,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Starts the scripted server; the receiver yields each stream a client opens.
async fn scripted_key_service(
    keys_never_answer: bool,
) -> (SocketAddr, mpsc::UnboundedReceiver<OpenedStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let service = ScriptedKeyService {
        opened: tx,
        keys_never_answer,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyServiceServer::new(service))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, rx)
}

fn link_to(addr: SocketAddr) -> AuthServiceLink {
    AuthServiceLink::new(&format!("http://{addr}"), TEST_VERIFIER_TOKEN, None).expect("link")
}

/// A verifier following the scripted server's revocation stream.
fn follow(addr: SocketAddr, stale_after: Duration) -> Arc<TokenVerifier> {
    let verifier = Arc::new(TokenVerifier::new(stale_after));
    tokio::spawn(auth_client::follow_revocations(
        link_to(addr),
        verifier.clone(),
    ));
    verifier
}

async fn next_stream(opened: &mut mpsc::UnboundedReceiver<OpenedStream>) -> OpenedStream {
    tokio::time::timeout(Duration::from_secs(5), opened.recv())
        .await
        .expect("the verifier opened no stream within 5 s")
        .expect("server running")
}

fn rule(sequence: u64, user: &str) -> pb::RevocationEvent {
    let now = Timestamp::now();
    pb::RevocationEvent {
        sequence,
        app_id: "app-1".into(),
        user_id: user.into(),
        scopes: vec![pb::Scope::UserInfo as i32],
        token_id: String::new(),
        issued_before: Some(timestamp(now)),
        expire_time: Some(timestamp(now.saturating_add(Duration::from_secs(3600)))),
        grant_id: String::new(),
    }
}

fn event(event: pb::RevocationEvent) -> pb::WatchRevocationsResponse {
    pb::WatchRevocationsResponse {
        event: Some(event),
        server_time: Some(timestamp(Timestamp::now())),
        heartbeat: false,
        resumed_after: None,
        live_key_ids: Vec::new(),
    }
}

fn heartbeat() -> pb::WatchRevocationsResponse {
    pb::WatchRevocationsResponse {
        event: None,
        server_time: Some(timestamp(Timestamp::now())),
        heartbeat: true,
        resumed_after: None,
        live_key_ids: Vec::new(),
    }
}

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn an_open_stream_and_its_backlog_do_not_count_as_fresh_until_a_heartbeat() {
    let (addr, mut opened) = scripted_key_service(false).await;
    let verifier = follow(addr, LONG);
    let stream = next_stream(&mut opened).await;
    assert_eq!(stream.after_sequence, 0);
    stream.send(event(rule(1, "u1"))).await;
    stream.send(event(rule(2, "u2"))).await;
    assert!(eventually(Duration::from_secs(5), || verifier.last_sequence() == 2).await);
    assert!(
        verifier.is_stale(std::time::Instant::now()),
        "fresh before auth-service said the backlog was complete"
    );
    stream.send(heartbeat()).await;
    assert!(
        eventually(Duration::from_secs(5), || !verifier
            .is_stale(std::time::Instant::now()))
        .await
    );
}

#[tokio::test]
async fn health_stays_not_serving_until_the_revocation_backlog_is_complete() {
    let (addr, mut opened) = scripted_key_service(false).await;
    let userinfo = TestUserInfoServer::launch_with(addr, TEST_VERIFIER_TOKEN, |_| {}).await;
    // The stream opens only after the keys have loaded.
    let stream = next_stream(&mut opened).await;
    stream.send(event(rule(1, "u1"))).await;
    // Many health-watch intervals, with keys and a backlog in flight but no heartbeat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !service_runtime::is_serving(userinfo.channel.clone(), "")
            .await
            .expect("health answers"),
        "SERVING before the revocation backlog was complete"
    );
    stream.send(heartbeat()).await;
    userinfo.wait_serving().await;
}

#[tokio::test]
async fn a_malformed_event_fails_closed_and_the_stream_resumes_from_before_it() {
    let (addr, mut opened) = scripted_key_service(false).await;
    let verifier = follow(addr, LONG);
    let first = next_stream(&mut opened).await;
    first.send(event(rule(1, "u1"))).await;
    first.send(heartbeat()).await;
    assert!(
        eventually(Duration::from_secs(5), || !verifier
            .is_stale(std::time::Instant::now()))
        .await
    );

    let mut unknown_scope = rule(2, "u2");
    unknown_scope.scopes.push(99);
    first.send(event(unknown_scope)).await;
    let _ = first.messages.send(Ok(heartbeat())).await;
    let second = next_stream(&mut opened).await;
    assert_eq!(second.after_sequence, 1, "resumed past the malformed event");
    assert_eq!(verifier.last_sequence(), 1);
    assert!(
        verifier.is_stale(std::time::Instant::now()),
        "fresh despite a lost rule"
    );

    let mut no_issue_time = rule(2, "u2");
    no_issue_time.issued_before = None;
    second.send(event(no_issue_time)).await;
    let third = next_stream(&mut opened).await;
    assert_eq!(third.after_sequence, 1);
    assert!(verifier.is_stale(std::time::Instant::now()));

    third.send(event(rule(2, "u2"))).await;
    third.send(heartbeat()).await;
    assert!(
        eventually(Duration::from_secs(5), || !verifier
            .is_stale(std::time::Instant::now()))
        .await
    );
    assert_eq!(verifier.last_sequence(), 2);
}

#[tokio::test]
async fn a_silent_stream_is_abandoned_and_reopened() {
    let (addr, mut opened) = scripted_key_service(false).await;
    let verifier = follow(addr, Duration::from_millis(300));
    let first = next_stream(&mut opened).await;
    first.send(event(rule(1, "u1"))).await;
    // Then nothing, not even a heartbeat: the connection may be half-open.
    let second = next_stream(&mut opened).await;
    assert_eq!(second.after_sequence, 1);
    second.send(heartbeat()).await;
    assert!(
        eventually(Duration::from_secs(5), || !verifier
            .is_stale(std::time::Instant::now()))
        .await
    );
    drop(first);
}

#[tokio::test]
async fn a_key_listing_that_never_answers_fails_after_the_call_timeout() {
    let (addr, _opened) = scripted_key_service(true).await;
    let answered = tokio::time::timeout(CALL_TIMEOUT * 3, link_to(addr).fetch_keys()).await;
    assert!(
        matches!(answered, Ok(Err(UserInfoError::AuthServiceUnavailable(_)))),
        "{answered:?}"
    );
}

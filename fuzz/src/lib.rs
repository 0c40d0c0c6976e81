//! What the fuzz targets share: a fixed signing key for token seeds; auth-service and
//! userinfo-service running in this process on 127.0.0.1:0 (their SQLite files on /dev/shm
//! when it exists, so writes cost no disk sync); raw gRPC calls that carry the fuzzer's bytes
//! as the request message with the credential the input picks; and the checks every answer
//! must pass (an answer within 10 s; every error with an `ErrorInfo`; bad input never
//! `INTERNAL`).
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Duration;

use auth_service::testing::{ALL_FEATURES, TestAuthServer, test_config};
use miniprogram_proto::ErrorReason;
use miniprogram_token::{KeyRing, SigningKey, Timestamp};
use tonic::Status;
use tonic::transport::Channel;
use userinfo_service::testing::TestUserInfoServer;

/// The secret of the key the token seeds were signed with: an Ed25519 seed of 0x5a bytes, its
/// public key, and a subject key of 0x3c bytes. Fixed, so committed seeds verify.
const SEED_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\
    0d7550754e0800a5d237eef5826035766b9b3e5a15868a940ab289958788e3b0\
    3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";

/// The seed key's id, as the seeds' footers name it.
pub const SEED_KEY_ID: &str = "kfuzz";

/// The key the token seeds were signed with, valid from 2020 to 2200.
pub fn seed_key() -> SigningKey {
    let bytes: Vec<u8> = (0..SEED_KEY.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&SEED_KEY[i..i + 2], 16).expect("hex"))
        .collect();
    let at = |year_2020_plus: i64| {
        Timestamp::from_unix_nanos(
            1_577_836_800_000_000_000 + year_2020_plus * 31_557_600_000_000_000,
        )
    };
    SigningKey::from_secret_bytes(SEED_KEY_ID.into(), &bytes, at(0), at(180), at(180))
        .expect("the seed key")
}

/// A ring holding the seed key, for opening tokens.
pub fn seed_ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::signing([seed_key()]))
}

/// Who a fuzzed call claims to be, picked by an input byte.
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    Nobody,
    Admin,
    Wallet,
    Verifier,
    /// The registered mini program's backend, with its secret.
    App,
    /// The registered mini program's id with a wrong secret.
    WrongSecret,
    /// userinfo-service's credential for a user's export and erasure.
    Privacy,
    /// userinfo-service's ProfileService credential.
    Profile,
}

impl Caller {
    pub fn pick(byte: u8) -> Caller {
        [
            Caller::Nobody,
            Caller::Admin,
            Caller::Wallet,
            Caller::Verifier,
            Caller::App,
            Caller::WrongSecret,
            Caller::Privacy,
            Caller::Profile,
        ][usize::from(byte) % 8]
    }
}

/// Both services, one mini program with every feature, and the runtime serving them.
pub struct Platform {
    runtime: tokio::runtime::Runtime,
    auth: TestAuthServer,
    userinfo: TestUserInfoServer,
    app_id: String,
    app_secret: String,
    _dir: tempfile::TempDir,
}

/// The platform, started on first use.
pub fn platform() -> &'static Platform {
    static PLATFORM: OnceLock<Platform> = OnceLock::new();
    PLATFORM.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = databases_dir();
        let (auth, userinfo, app_id, app_secret) = runtime.block_on(async {
            let url = format!("sqlite://{}", dir.path().join("auth.db").display());
            let auth = TestAuthServer::start_config(test_config(url), None).await;
            let url = format!("sqlite://{}", dir.path().join("userinfo.db").display());
            let userinfo =
                TestUserInfoServer::start_with(auth.addr, &auth.config.callers.verifier, |u| {
                    u.database_url = url
                })
                .await;
            let (app_id, app_secret) = auth.create_app(&ALL_FEATURES).await;
            (auth, userinfo, app_id, app_secret)
        });
        Platform {
            runtime,
            auth,
            userinfo,
            app_id,
            app_secret,
            _dir: dir,
        }
    })
}

/// A new directory for the services' SQLite files: on /dev/shm when there is one (writes then
/// cost no disk sync). libFuzzer ends the process without running destructors, so the
/// directory outlives it; the next run removes those whose process is gone.
fn databases_dir() -> tempfile::TempDir {
    const PREFIX: &str = "miniprogram-fuzz-";
    let shm = std::path::Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let owner = name.to_str().and_then(|n| {
            n.strip_prefix(PREFIX)?
                .split('-')
                .next()?
                .parse::<u32>()
                .ok()
        });
        if owner.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir_in(parent)
        .expect("a temp dir")
}

/// Which server a call goes to.
#[derive(Debug, Clone, Copy)]
pub enum Server {
    Auth,
    UserInfo,
}

impl Platform {
    fn header(&self, caller: Caller) -> Option<String> {
        let callers = &self.auth.config.callers;
        let basic = |secret: &str| {
            use base64::Engine;
            let pair = format!("{}:{secret}", self.app_id);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        match caller {
            Caller::Nobody => None,
            Caller::Admin => Some(format!("Bearer {}", callers.admin)),
            Caller::Wallet => Some(format!("Bearer {}", callers.wallet)),
            Caller::Verifier => Some(format!("Bearer {}", callers.verifier)),
            Caller::App => Some(basic(&self.app_secret)),
            Caller::WrongSecret => Some(basic("not-the-secret")),
            Caller::Privacy => (callers.privacy.as_ref()).map(|token| format!("Bearer {token}")),
            Caller::Profile => Some(format!("Bearer {}", self.userinfo.config.profile_token)),
        }
    }

    fn channel(&self, server: Server) -> Channel {
        match server {
            Server::Auth => self.auth.channel.clone(),
            Server::UserInfo => self.userinfo.channel.clone(),
        }
    }

    /// Calls `path` on `server` as `caller` with `message` as the encoded request: the
    /// encoded response (the first message, for a server stream) or the error.
    ///
    /// # Panics
    /// When no answer comes within 10 s (a finding).
    pub fn call(
        &self,
        server: Server,
        path: &'static str,
        caller: Caller,
        message: Vec<u8>,
        streaming: bool,
    ) -> Result<Vec<u8>, Status> {
        let channel = self.channel(server);
        let header = self.header(caller);
        self.runtime.block_on(async move {
            let answer = async move {
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready()
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                let mut request = tonic::Request::new(message);
                if let Some(value) = header.and_then(|h| h.parse().ok()) {
                    request.metadata_mut().insert("authorization", value);
                }
                let path = http::uri::PathAndQuery::from_static(path);
                if streaming {
                    let mut stream = grpc.server_streaming(request, path, RawCodec).await?;
                    let first = stream.get_mut().message().await?;
                    Ok(first.unwrap_or_default())
                } else {
                    Ok(grpc.unary(request, path, RawCodec).await?.into_inner())
                }
            };
            tokio::time::timeout(Duration::from_secs(10), answer)
                .await
                .unwrap_or_else(|_| panic!("{path}: no answer within 10 s"))
        })
    }
}

/// The checks every answer must pass: an error carries our `ErrorInfo`, and is never
/// `INTERNAL` (bad input is the caller's fault, with its reason; a failure of ours is a bug).
///
/// # Panics
/// When one fails (a finding).
pub fn check_answer(path: &str, answer: &Result<Vec<u8>, Status>) {
    if let Err(status) = answer {
        let reason = ErrorReason::of(status)
            .unwrap_or_else(|| panic!("{path}: an error without ErrorInfo: {status:?}"));
        assert_ne!(
            reason,
            ErrorReason::Internal,
            "{path}: a request answered INTERNAL: {status:?}"
        );
    }
}

/// Passes message bytes through untouched: the fuzzer's bytes are the request message.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// auth-service's methods: (path, server-streaming). An input's first byte picks one.
pub const AUTH_METHODS: [(&str, bool); 17] = [
    ("/miniprogram.auth.v1.AppService/CreateApp", false),
    ("/miniprogram.auth.v1.AppService/GetApp", false),
    ("/miniprogram.auth.v1.AppService/EnableFeature", false),
    ("/miniprogram.auth.v1.AppService/DisableFeature", false),
    ("/miniprogram.auth.v1.AppService/RotateAppSecret", false),
    (
        "/miniprogram.auth.v1.AuthorizationService/RequestAuthorization",
        false,
    ),
    (
        "/miniprogram.auth.v1.AuthorizationService/ResolvePrompt",
        false,
    ),
    (
        "/miniprogram.auth.v1.AuthorizationService/ListAuthorizations",
        false,
    ),
    (
        "/miniprogram.auth.v1.AuthorizationService/RevokeAuthorization",
        false,
    ),
    ("/miniprogram.auth.v1.TokenService/ExchangeAuthCode", false),
    (
        "/miniprogram.auth.v1.TokenService/RefreshAccessToken",
        false,
    ),
    ("/miniprogram.auth.v1.TokenService/RevokeToken", false),
    ("/miniprogram.auth.v1.TokenService/IntrospectToken", false),
    ("/miniprogram.auth.v1.KeyService/ListTokenKeys", false),
    ("/miniprogram.auth.v1.KeyService/WatchRevocations", true),
    (
        "/miniprogram.auth.v1.KeyAdminService/ListSigningKeys",
        false,
    ),
    (
        "/miniprogram.auth.v1.KeyAdminService/RetireSigningKey",
        false,
    ),
];

/// userinfo-service's methods, likewise.
pub const USERINFO_METHODS: [(&str, bool); 5] = [
    (
        "/miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo",
        false,
    ),
    (
        "/miniprogram.userinfo.v1.UserInfoService/GetPhoneNumber",
        false,
    ),
    (
        "/miniprogram.userinfo.v1.ProfileService/UpsertProfile",
        false,
    ),
    ("/miniprogram.userinfo.v1.ProfileService/GetProfile", false),
    (
        "/miniprogram.userinfo.v1.ProfileService/DeleteProfile",
        false,
    ),
];

/// Splits an input into a selector byte, a caller byte and the message.
pub fn split(data: &[u8]) -> Option<(u8, Caller, Vec<u8>)> {
    let (&selector, rest) = data.split_first()?;
    let (&caller, message) = rest.split_first()?;
    Some((selector, Caller::pick(caller), message.to_vec()))
}

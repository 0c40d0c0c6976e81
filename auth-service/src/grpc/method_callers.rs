//! A caller check that knows the method: AuthorizationService is the wallet gateway's, but a
//! user's export and erasure are also open to userinfo-service's privacy credential, so that
//! userinfo-service holds no credential that could run consent. A tonic interceptor sees no
//! method, so this wraps the service and reads the request's path.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;

use crate::credentials::{CallerRole, CallerRoles};

/// The methods of AuthorizationService the privacy role may call as well as the wallet.
pub const PRIVACY_METHODS: [&str; 2] = ["ExportUserAuthorizations", "EraseUserAuthorizations"];

/// AuthorizationService behind its callers: the wallet for every method, the privacy role for
/// [`PRIVACY_METHODS`] too. A refused call never reaches the service.
#[derive(Clone)]
pub struct AuthorizationCallers<S> {
    inner: S,
    callers: Arc<CallerRoles>,
}

impl<S> AuthorizationCallers<S> {
    pub fn new(inner: S, callers: Arc<CallerRoles>) -> Self {
        AuthorizationCallers { inner, callers }
    }
}

impl<S: NamedService> NamedService for AuthorizationCallers<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for AuthorizationCallers<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + NamedService,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The whole path, `/<service>/<method>`, as the service routes it.
        let method = (request.uri().path().strip_prefix('/'))
            .and_then(|path| path.strip_prefix(S::NAME))
            .and_then(|path| path.strip_prefix('/'));
        let allowed: &[CallerRole] = if method.is_some_and(|m| PRIVACY_METHODS.contains(&m)) {
            &[CallerRole::Wallet, CallerRole::Privacy]
        } else {
            &[CallerRole::Wallet]
        };
        let header = request.headers().get("authorization");
        let header = header.and_then(|value| value.to_str().ok());
        match self.callers.authorize_any(header, allowed) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refused) => Either::Left(ready(Ok(Status::from(refused).into_http()))),
        }
    }
}

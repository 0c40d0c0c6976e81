//! The bearer-role check in front of each console, wallet and verifier service, by method:
//! every method of a service takes its role, and a few also take another (a user's export and
//! erasure in AuthorizationService also take userinfo-service's privacy credential, so that
//! userinfo-service holds no credential that could run consent). A tonic interceptor sees no
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

/// A service behind its callers: `role` for every method, and `also` for the methods it names
/// too. A refused call never reaches the service.
#[derive(Clone)]
pub struct CallerCheck<S> {
    inner: S,
    callers: Arc<CallerRoles>,
    role: CallerRole,
    also: Option<(CallerRole, &'static [&'static str])>,
}

impl<S> CallerCheck<S> {
    /// `inner`, answering only callers of `role`.
    pub fn new(inner: S, callers: Arc<CallerRoles>, role: CallerRole) -> Self {
        CallerCheck {
            inner,
            callers,
            role,
            also: None,
        }
    }

    /// The same, with `methods` open to `role` as well.
    pub fn also(mut self, role: CallerRole, methods: &'static [&'static str]) -> Self {
        self.also = Some((role, methods));
        self
    }
}

impl<S: NamedService> NamedService for CallerCheck<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for CallerCheck<S>
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
        let also = (self.also).filter(|(_, methods)| method.is_some_and(|m| methods.contains(&m)));
        let both;
        let allowed: &[CallerRole] = match also {
            Some((also, _)) => {
                both = [self.role, also];
                &both
            }
            None => std::slice::from_ref(&self.role),
        };
        let header = request.headers().get("authorization");
        let header = header.and_then(|value| value.to_str().ok());
        match self.callers.authorize_any(header, allowed) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refused) => Either::Left(ready(Ok(Status::from(refused).into_http()))),
        }
    }
}

//! `http`: the guest's only way out. Policy first (declared hosts only, no guest-supplied
//! credentials), then the tenant's token, then the transport.

use std::time::{Duration, Instant};

use crate::bindings::http::{Host, HttpError, Method, Request, Response};
use crate::credentials::CredentialError;
use crate::http::TransportError;
use crate::policy::PolicyError;
use crate::runtime::TenantState;

impl Host for TenantState {
    fn send(&mut self, req: Request) -> Result<Response, HttpError> {
        self.stats.host_calls += 1;
        self.touch();
        let services = self.tenant.services.clone();
        let resolved = services.policy.resolve(&req.url).map_err(|e| match e {
            PolicyError::NotAllowed(host) => HttpError::DestinationNotAllowed(host),
            PolicyError::InvalidUrl { url, reason } => {
                HttpError::InvalidRequest(format!("{url}: {reason}"))
            }
        })?;
        let mut headers = Vec::with_capacity(req.headers.len() + 1);
        for (name, value) in req.headers {
            if name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("host") {
                return Err(HttpError::InvalidRequest(format!(
                    "the {name} header is set by the host"
                )));
            }
            headers.push((name, value));
        }
        if req.authenticated {
            let token = services
                .credentials
                .access_token(&self.tenant.tenant, &services.http, &services.policy)
                .map_err(|e| match e {
                    // The token endpoint failed for now: a retryable connection problem, not a
                    // reason to ask the user to connect again.
                    CredentialError::Transient(m) | CredentialError::Storage(m) => {
                        HttpError::Connection(format!("refreshing the access token failed: {m}"))
                    }
                    other => HttpError::NoCredentials(other.to_string()),
                })?;
            headers.push(("Authorization".to_string(), format!("Bearer {token}")));
        }
        let method = match req.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        };
        let path = url::Url::parse(&req.url)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        *self.stats.requests.entry(path).or_default() += 1;
        let started = Instant::now();
        let result = services.http.send(
            method,
            &resolved.url,
            &headers,
            req.body,
            req.timeout_ms.map(Duration::from_millis),
        );
        self.stats.http_time += started.elapsed();
        self.touch();
        let response = result.map_err(|e| match e {
            TransportError::Timeout(m) => HttpError::Timeout(m),
            TransportError::Connection(m) => HttpError::Connection(m),
            TransportError::BodyTooLarge(n) => HttpError::BodyTooLarge(n),
            TransportError::InvalidRequest(m) => HttpError::InvalidRequest(m),
        })?;
        self.stats.bytes_received += response.body.len() as u64;
        Ok(Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }
}

//! Who may use which endpoint: the bearer token (compared in constant
//! time) and the loopback/remote rule.
//!
//! Owns the access decision and its messages; never sees a request body.
//!
//! Rules, in order:
//! 1. `/metrics` is open to everyone.
//! 2. With a `token`, every other endpoint needs `Authorization: Bearer
//!    <token>`; otherwise 401.
//! 3. Without a token, on a non-loopback `addr` (the address the exporter
//!    serves on, not the client's: behind a local reverse proxy every client
//!    looks local) profile and control endpoints answer 403, unless
//!    `allow_remote_control` is set.

use std::net::SocketAddr;

use subtle::ConstantTimeEq;

/// How sensitive an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// `/metrics`: open.
    Public,
    /// Pages with live numbers only (`/`): token if set, open otherwise.
    Page,
    /// Stacks, command line, CPU profiles: token, or loopback, or
    /// `allow_remote_control`.
    Profile,
    /// Endpoints that change state: as `Profile`.
    Control,
}

/// The decision for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// 401 with this message.
    Unauthorized(&'static str),
    /// 403 with this message.
    Forbidden(String),
}

/// The access policy of one exporter.
#[derive(Clone)]
pub(crate) struct Policy {
    token: Option<Vec<u8>>,
    remote: bool,
    allow_remote_control: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("remote", &self.remote)
            .field("allow_remote_control", &self.allow_remote_control)
            .finish()
    }
}

const NEED_TOKEN: &str = "this endpoint needs the header `Authorization: Bearer <token>` \
     with the token set in the exporter's configuration (`token`, or ALLOCSCOPE_TOKEN)\n";
const BAD_TOKEN: &str = "wrong bearer token: send `Authorization: Bearer <token>` with the \
     token set in the exporter's configuration (`token`, or ALLOCSCOPE_TOKEN)\n";

impl Policy {
    /// The policy for an exporter serving on `addr`.
    pub(crate) fn new(token: Option<&str>, addr: SocketAddr, allow_remote_control: bool) -> Self {
        Policy {
            token: token.map(|t| t.as_bytes().to_vec()),
            remote: !addr.ip().is_loopback(),
            allow_remote_control,
        }
    }

    /// Whether profile data may be shown on pages (the landing page shows
    /// the flamegraph only then).
    pub(crate) fn profiles_visible(&self) -> bool {
        self.token.is_some() || !self.remote || self.allow_remote_control
    }

    /// Decides one request from its `Authorization` header value.
    pub(crate) fn check(
        &self,
        access: Access,
        authorization: Option<&[u8]>,
        addr: &str,
    ) -> Verdict {
        if access == Access::Public {
            return Verdict::Allow;
        }
        if let Some(token) = &self.token {
            let Some(given) = authorization.and_then(bearer) else {
                return Verdict::Unauthorized(NEED_TOKEN);
            };
            // Constant time in the token's content (the length is not secret).
            return if bool::from(given.ct_eq(token.as_slice())) {
                Verdict::Allow
            } else {
                Verdict::Unauthorized(BAD_TOKEN)
            };
        }
        if access == Access::Page || !self.remote || self.allow_remote_control {
            return Verdict::Allow;
        }
        Verdict::Forbidden(format!(
            "profile and control endpoints are off because the exporter listens on a \
             non-loopback address ({addr}) without a token. To enable them, either set \
             `token` (ALLOCSCOPE_TOKEN) and send `Authorization: Bearer <token>`, or set \
             `allow_remote_control = true` (ALLOCSCOPE_ALLOW_REMOTE_CONTROL=true) to serve \
             them to anyone who can reach {addr}; or listen on 127.0.0.1.\n"
        ))
    }
}

/// The credentials of an `Authorization: Bearer <token>` header value
/// (scheme case-insensitive, as RFC 6750 allows).
fn bearer(h: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = h.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let t = rest.trim_ascii();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef";

    fn local() -> SocketAddr {
        "127.0.0.1:6060".parse().unwrap()
    }

    fn remote() -> SocketAddr {
        "0.0.0.0:9100".parse().unwrap()
    }

    #[test]
    fn token_rules() {
        let p = Policy::new(Some(T), remote(), false);
        let a = "0.0.0.0:9100";
        assert_eq!(p.check(Access::Public, None, a), Verdict::Allow);
        for acc in [Access::Page, Access::Profile, Access::Control] {
            assert_eq!(p.check(acc, None, a), Verdict::Unauthorized(NEED_TOKEN));
            assert_eq!(
                p.check(acc, Some(b"Bearer 0123456789abcdef"), a),
                Verdict::Allow
            );
            assert_eq!(
                p.check(acc, Some(b"bearer  0123456789abcdef "), a),
                Verdict::Allow
            );
            for bad in [
                &b"Bearer 0123456789abcdeF"[..],
                b"Bearer 0123456789abcde",
                b"Bearer 0123456789abcdef0",
                b"Basic 0123456789abcdef",
                b"Bearer ",
                b"0123456789abcdef",
                b"",
            ] {
                assert!(
                    matches!(p.check(acc, Some(bad), a), Verdict::Unauthorized(_)),
                    "{:?}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn remote_rules() {
        let a = "0.0.0.0:9100";
        let p = Policy::new(None, remote(), false);
        assert_eq!(p.check(Access::Public, None, a), Verdict::Allow);
        assert_eq!(p.check(Access::Page, None, a), Verdict::Allow);
        assert!(!p.profiles_visible());
        for acc in [Access::Profile, Access::Control] {
            let Verdict::Forbidden(m) = p.check(acc, None, a) else {
                panic!("not forbidden")
            };
            assert!(m.contains("token") && m.contains("allow_remote_control") && m.contains(a));
        }
        let p = Policy::new(None, remote(), true);
        assert_eq!(p.check(Access::Control, None, a), Verdict::Allow);
        let p = Policy::new(None, local(), false);
        assert_eq!(p.check(Access::Control, None, a), Verdict::Allow);
        assert!(p.profiles_visible());
        let p = Policy::new(None, "[::1]:6060".parse().unwrap(), false);
        assert_eq!(p.check(Access::Profile, None, a), Verdict::Allow);
    }
}

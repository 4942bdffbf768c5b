//! Who may register as which endpoint. A device that proved an identity on its link (its DTLS
//! PSK identity) registers only as the endpoint the catalog binds that identity to; an
//! endpoint that has an identity never registers without it (no downgrade to plain CoAP); a
//! registration is updated or removed only with the identity it was made with; and a server
//! may refuse plain CoAP registrations altogether. Where identities are bound is
//! [`IdentityBinding`]'s to say.

use std::sync::Arc;

use super::Registration;

/// Which endpoint each identity is bound to.
pub trait IdentityBinding: Send + Sync + 'static {
    /// The endpoint `identity` may register as.
    fn endpoint_of(&self, identity: &str) -> Option<String>;
    /// The identity `endpoint` must register with, if it has one.
    fn identity_of(&self, endpoint: &str) -> Option<String>;
}

/// Why a registration request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No identity where one is needed (4.01).
    Unauthenticated(String),
    /// An identity that may not do this (4.03).
    Forbidden(String),
}

/// The admission rules of one server.
#[derive(Clone, Default)]
pub struct Admission {
    /// Identities and their endpoints; `None`: no device has one (plain CoAP only).
    binding: Option<Arc<dyn IdentityBinding>>,
    /// Whether a registration over plain CoAP is refused.
    require_identity: bool,
}

impl Admission {
    /// Rules over `binding`; `require_identity` refuses every registration over plain CoAP.
    pub fn new(binding: Arc<dyn IdentityBinding>, require_identity: bool) -> Admission {
        Admission {
            binding: Some(binding),
            require_identity,
        }
    }

    /// Whether a device with `identity` (`None`: plain CoAP) may register as `endpoint`.
    pub fn register(&self, endpoint: &str, identity: Option<&str>) -> Result<(), Refusal> {
        let Some(binding) = &self.binding else {
            return Ok(());
        };
        match identity {
            Some(identity) => match binding.endpoint_of(identity) {
                Some(bound) if bound == endpoint => Ok(()),
                Some(bound) => Err(Refusal::Forbidden(format!(
                    "identity {identity:?} is bound to endpoint {bound:?}, not {endpoint:?}"
                ))),
                None => Err(Refusal::Forbidden(format!(
                    "identity {identity:?} is bound to no endpoint"
                ))),
            },
            None if self.require_identity => Err(Refusal::Unauthenticated(
                "this server registers devices over DTLS only".into(),
            )),
            None if binding.identity_of(endpoint).is_some() => Err(Refusal::Unauthenticated(
                format!("endpoint {endpoint:?} has credentials: it registers over DTLS only"),
            )),
            None => Ok(()),
        }
    }

    /// Whether a request from `identity` may update or de-register `registration`: only with
    /// the identity it was made with (none for one made over plain CoAP).
    pub fn owns(registration: &Registration, identity: Option<&str>) -> Result<(), Refusal> {
        if registration.identity.as_deref() == identity {
            return Ok(());
        }
        Err(Refusal::Forbidden(format!(
            "the registration of {:?} belongs to another identity",
            registration.endpoint
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Bound(HashMap<&'static str, &'static str>);

    impl IdentityBinding for Bound {
        fn endpoint_of(&self, identity: &str) -> Option<String> {
            self.0.get(identity).map(|e| e.to_string())
        }
        fn identity_of(&self, endpoint: &str) -> Option<String> {
            let found = self.0.iter().find(|(_, e)| **e == endpoint);
            found.map(|(i, _)| i.to_string())
        }
    }

    fn admission(require_identity: bool) -> Admission {
        let bound = Bound(HashMap::from([("id-a", "dev-a")]));
        Admission::new(Arc::new(bound), require_identity)
    }

    #[test]
    fn an_identity_registers_only_as_its_endpoint() {
        let rules = admission(false);
        assert_eq!(rules.register("dev-a", Some("id-a")), Ok(()));
        assert!(matches!(
            rules.register("dev-b", Some("id-a")),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            rules.register("dev-b", Some("stranger")),
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn plain_coap_registers_only_endpoints_without_credentials_and_only_when_allowed() {
        assert_eq!(admission(false).register("dev-b", None), Ok(()));
        assert!(matches!(
            admission(false).register("dev-a", None),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            admission(true).register("dev-b", None),
            Err(Refusal::Unauthenticated(_))
        ));
        assert_eq!(Admission::default().register("dev-a", None), Ok(()));
    }
}

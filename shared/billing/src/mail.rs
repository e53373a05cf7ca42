//! The `Mailer` port: mail to subscribers and billing users. The texts of every mail the service
//! sends live in [`texts`], so that wording is reviewed in one place; the adapters (SES, a file
//! outbox) live in `billing-adapters`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod texts;

/// One plain-text mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mail {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The body, plain text.
    pub text: String,
}

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail service is unreachable or failed; safe to retry.
    #[error("mail could not be sent")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The mail service refused this mail (unverified sender, malformed address); retrying the
    /// same mail would be refused again.
    #[error("mail was refused")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Sends mail.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends the mail; returns the id the mail service gave it.
    async fn send(&self, mail: &Mail) -> Result<String, MailError>;

    /// [`Mailer::send`], counted in [`crate::metrics::MAILS`]: what the use cases call.
    async fn deliver(&self, mail: &Mail) -> Result<String, MailError> {
        let sent = self.send(mail).await;
        crate::metrics::mail(sent.is_ok());
        sent
    }
}

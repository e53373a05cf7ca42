//! The `Mailer` port: mail to subscribers, and its adapters: SES (v2) in AWS and against moto,
//! and a file outbox for the local server.

use std::path::PathBuf;

use async_trait::async_trait;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};

use crate::config::{ConfigError, Environment, required};

/// One mail: plain text, with an HTML alternative when given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The mail service is unreachable or failed; safe to retry.
    #[error("mail could not be sent: {0}")]
    Unavailable(String),
    /// The mail service refused this mail (unverified sender, malformed address).
    #[error("mail was refused: {0}")]
    Refused(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends the mail; returns the id the mail service gave it.
    async fn send(&self, mail: &Mail) -> Result<String, MailError>;
}

/// SES v2, from `MAIL_FROM`.
#[derive(Clone, Debug)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    from: String,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client, from: impl Into<String>) -> Self {
        SesMailer {
            client,
            from: from.into(),
        }
    }

    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        SesMailer::from_env_with_config(env, &crate::aws::load_sdk_config().await)
    }

    /// From `MAIL_FROM`, with a client of an already loaded configuration.
    pub fn from_env_with_config(env: &dyn Environment, config: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let from = required(env, "MAIL_FROM")?;
        Ok(SesMailer::new(aws_sdk_sesv2::Client::new(config), from))
    }
}

fn content(text: &str) -> Result<Content, MailError> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|e| MailError::Refused(e.to_string()))
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        let mut body = Body::builder().text(content(&mail.text)?);
        if let Some(html) = &mail.html {
            body = body.html(content(html)?);
        }
        let message = Message::builder()
            .subject(content(&mail.subject)?)
            .body(body.build())
            .build();
        let result = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&mail.to).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.message_id.unwrap_or_default()),
            Err(error) => {
                let refused = error.as_service_error().is_some_and(|e| {
                    e.is_message_rejected()
                        || e.is_mail_from_domain_not_verified_exception()
                        || e.is_bad_request_exception()
                });
                let detail = format!("{error:?}");
                if refused {
                    Err(MailError::Refused(detail))
                } else {
                    Err(MailError::Unavailable(detail))
                }
            }
        }
    }
}

/// Writes each mail as a JSON file into a directory (and logs it): the local server's outbox.
#[derive(Clone, Debug)]
pub struct OutboxMailer {
    dir: PathBuf,
}

impl OutboxMailer {
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(OutboxMailer { dir })
    }

    /// Every mail in the outbox, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let mut entries: Vec<_> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        entries
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .map(|v| Mail {
                to: v["to"].as_str().unwrap_or_default().to_owned(),
                subject: v["subject"].as_str().unwrap_or_default().to_owned(),
                text: v["text"].as_str().unwrap_or_default().to_owned(),
                html: v["html"].as_str().map(str::to_owned),
            })
            .collect()
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        let id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f"),
            uuid::Uuid::new_v4().simple()
        );
        let json =
            serde_json::json!({"id": id, "to": mail.to, "subject": mail.subject, "text": mail.text, "html": mail.html});
        std::fs::write(self.dir.join(format!("{id}.json")), json.to_string())
            .map_err(|e| MailError::Unavailable(e.to_string()))?;
        tracing::info!(mail = %id, to = %mail.to, subject = %mail.subject, "mail written to the outbox");
        Ok(id)
    }
}

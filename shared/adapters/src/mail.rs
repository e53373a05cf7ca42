//! Adapters of the [`Mailer`] port: SES (v2) in AWS and against moto (feature `ses`), and a file
//! outbox for the local server and tests.

use std::path::PathBuf;

use async_trait::async_trait;
use billing::mail::{Mail, MailError, Mailer};

#[cfg(feature = "ses")]
pub use ses::SesMailer;

#[cfg(feature = "ses")]
mod ses {
    use async_trait::async_trait;
    use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
    use billing::config::{ConfigError, Environment, required};
    use billing::mail::{Mail, MailError, Mailer};

    /// SES v2, sending from `MAIL_FROM`.
    #[derive(Clone, Debug)]
    pub struct SesMailer {
        client: aws_sdk_sesv2::Client,
        from: String,
        /// The SES configuration set every mail is sent with (suppression of bouncing and
        /// complaining addresses, reputation metrics), when configured.
        configuration_set: Option<String>,
    }

    impl SesMailer {
        /// A mailer sending from `from` through `client`.
        pub fn new(client: aws_sdk_sesv2::Client, from: impl Into<String>) -> Self {
            SesMailer {
                client,
                from: from.into(),
                configuration_set: None,
            }
        }

        /// Every mail is sent with this SES configuration set.
        #[must_use]
        pub fn with_configuration_set(mut self, configuration_set: Option<String>) -> Self {
            self.configuration_set = configuration_set.filter(|name| !name.is_empty());
            self
        }

        /// From `MAIL_FROM` (and `MAIL_CONFIGURATION_SET`), with a client of an already loaded
        /// configuration.
        pub fn from_env_with_config(
            env: &dyn Environment,
            config: &aws_config::SdkConfig,
        ) -> Result<Self, ConfigError> {
            let from = required(env, "MAIL_FROM")?;
            Ok(SesMailer::new(aws_sdk_sesv2::Client::new(config), from)
                .with_configuration_set(env.var("MAIL_CONFIGURATION_SET")))
        }
    }

    fn content(text: &str) -> Result<Content, MailError> {
        Content::builder()
            .data(text)
            .charset("UTF-8")
            .build()
            .map_err(|e| MailError::Refused(Box::new(e)))
    }

    #[async_trait]
    impl Mailer for SesMailer {
        async fn send(&self, mail: &Mail) -> Result<String, MailError> {
            let message = Message::builder()
                .subject(content(&mail.subject)?)
                .body(Body::builder().text(content(&mail.text)?).build())
                .build();
            let result = self
                .client
                .send_email()
                .set_configuration_set_name(self.configuration_set.clone())
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
                    if refused {
                        Err(MailError::Refused(Box::new(error)))
                    } else {
                        Err(MailError::Unavailable(Box::new(error)))
                    }
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

/// One file of the outbox: the mail and the id it was given.
#[derive(serde::Serialize, serde::Deserialize)]
struct OutboxFile {
    id: String,
    #[serde(flatten)]
    mail: Mail,
}

impl OutboxMailer {
    /// An outbox in `dir`, created when missing.
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
            .filter_map(|path| std::fs::read(path).ok())
            .filter_map(|bytes| serde_json::from_slice::<OutboxFile>(&bytes).ok())
            .map(|file| file.mail)
            .collect()
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        // File names sort in sending order: a sequence number within the process, after the time.
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!(
            "{}-{sequence:06}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f"),
            uuid::Uuid::new_v4().simple()
        );
        let file = OutboxFile {
            id: id.clone(),
            mail: mail.clone(),
        };
        let json = serde_json::to_vec(&file).map_err(|e| MailError::Refused(Box::new(e)))?;
        std::fs::write(self.dir.join(format!("{id}.json")), json).map_err(|e| MailError::Unavailable(Box::new(e)))?;
        tracing::info!(mail = %id, to = %mail.to, subject = %mail.subject, "mail written to the outbox");
        Ok(id)
    }
}

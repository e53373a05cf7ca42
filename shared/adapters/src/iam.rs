//! The AWS permissions each port operation needs on the adapters of this crate.
//!
//! This table is the adapters' side of `billing::access`: a function's IAM policy must grant
//! the union of [`grants`] over the operations it declares, and nothing else. DynamoDB
//! transactions have no action of their own: every item of a `TransactWriteItems` needs the
//! action of its kind (`Put` needs `dynamodb:PutItem`, `ConditionCheck` needs
//! `dynamodb:ConditionCheckItem`). The bundle's test `tests/iam_policies.rs` compares the
//! template's policies with this table.
//!
//! Keep this table next to the code it describes: an adapter change that issues a new request
//! changes its row here in the same commit.

use billing::access::Operation;

/// What a permission applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// The billing table itself.
    Table,
    /// The billing table's global secondary indexes.
    TableIndexes,
    /// The account's SES identities (the verified sender).
    MailIdentities,
    /// The stack's SES configuration set, which every mail names.
    MailConfigurationSet,
    /// The Secrets Manager secrets the template names.
    Secrets,
    /// The invoicing queue.
    InvoicingQueue,
}

/// One permission: an IAM action on a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    /// The IAM action, as a policy names it (`dynamodb:GetItem`).
    pub action: &'static str,
    /// What it applies to.
    pub resource: Resource,
}

const fn on_table(action: &'static str) -> Grant {
    Grant {
        action,
        resource: Resource::Table,
    }
}

const GET_ITEM: Grant = on_table("dynamodb:GetItem");
const PUT_ITEM: Grant = on_table("dynamodb:PutItem");
const CONDITION_CHECK_ITEM: Grant = on_table("dynamodb:ConditionCheckItem");
const QUERY_TABLE: Grant = on_table("dynamodb:Query");
const QUERY_INDEXES: Grant = Grant {
    action: "dynamodb:Query",
    resource: Resource::TableIndexes,
};
const GET_SECRET_VALUE: Grant = Grant {
    action: "secretsmanager:GetSecretValue",
    resource: Resource::Secrets,
};
const SEND_INVOICING_MESSAGE: Grant = Grant {
    action: "sqs:SendMessage",
    resource: Resource::InvoicingQueue,
};
const SEND_EMAIL_WITH_SET: Grant = Grant {
    action: "ses:SendEmail",
    resource: Resource::MailConfigurationSet,
};
const SEND_EMAIL: Grant = Grant {
    action: "ses:SendEmail",
    resource: Resource::MailIdentities,
};

/// The permissions `operation` needs on `DynamoStore` and `SesMailer`, with the requests that
/// need them.
pub fn grants(operation: Operation) -> &'static [Grant] {
    match operation {
        // A transaction of two Puts (state, audit); a cancelled one is told apart by a GetItem.
        Operation::CreateSubscription | Operation::UpdateSubscription => &[PUT_ITEM, GET_ITEM],
        Operation::GetSubscription | Operation::IsRecorded | Operation::GetDocument | Operation::GetKeptEvent => {
            &[GET_ITEM]
        }
        // A PutItem, conditional on its absence unless it replaces.
        Operation::KeepEvent => &[PUT_ITEM],
        Operation::ListKeptEvents => &[QUERY_INDEXES],
        Operation::FindByStripeSubscription | Operation::FindByStripeCustomer | Operation::ListSubscriptions => {
            &[QUERY_INDEXES]
        }
        Operation::AuditTrail | Operation::ListDocuments => &[QUERY_TABLE],
        // A transaction of Puts: the event's id, alone.
        Operation::RecordEvent => &[PUT_ITEM],
        // The id, the event mark and the new state and audit (Puts), or, when the event changes
        // nothing, a ConditionCheck on the subscription's version.
        Operation::RecordEventWithWrite => &[PUT_ITEM, CONDITION_CHECK_ITEM],
        // PutItem, or a transaction of Puts.
        Operation::PutDocument | Operation::PutDocuments => &[PUT_ITEM],
        // SES authorizes a send on the sender's identity and on the configuration set it names.
        Operation::SendMail => &[SEND_EMAIL, SEND_EMAIL_WITH_SET],
        // Through the Parameters and Secrets extension, which calls with the function's role.
        Operation::ReadSecrets => &[GET_SECRET_VALUE],
        // SendMessageBatch is authorized as sqs:SendMessage.
        Operation::EnqueueInvoicing => &[SEND_INVOICING_MESSAGE],
    }
}

/// The permissions a function declaring `operations` needs, sorted, without repeats.
pub fn policy(operations: &[Operation]) -> Vec<Grant> {
    let mut grants: Vec<Grant> = operations.iter().flat_map(|op| grants(*op)).copied().collect();
    grants.sort();
    grants.dedup();
    grants
}

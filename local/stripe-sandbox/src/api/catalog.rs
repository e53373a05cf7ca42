//! Products and prices as an account's set-up makes them (`scripts/create-stripe-prices.sh`):
//! `POST /v1/products` (Stripe accepts a chosen `id`, which makes re-running the set-up find
//! what it made), `GET /v1/products/{id}`, and `POST /v1/prices` with a `lookup_key` that is
//! unique among the account's prices unless `transfer_lookup_key=true` moves it, as on Stripe.
//! `GET /v1/prices` filters by `lookup_keys[]`, `product` and `active` (in `State::list_prices`).

use serde_json::{Value, json};

use super::{Failure, Outcome, Params, State, error, invalid, no_such, short_id};
use crate::objects::{self, PriceSpec};

impl State {
    pub fn create_product(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(params, &["id", "name", "description", "metadata", "active", "expand"])?;
        let name = p.required("name")?;
        let id = p.string("id")?.map_or_else(|| short_id("prod"), str::to_owned);
        if self.products.contains_key(&id) {
            return Err(error(
                400,
                "invalid_request_error",
                Some("resource_already_exists"),
                Some("id"),
                "Product already exists.".to_owned(),
                false,
            ));
        }
        let metadata = p.metadata(&json!({}))?.unwrap_or_else(|| json!({}));
        let product = json!({
            "id": id,
            "object": "product",
            "active": p.boolean("active")?.unwrap_or(true),
            "created": now,
            "default_price": null,
            "description": p.string("description")?,
            "images": [],
            "livemode": false,
            "marketing_features": [],
            "metadata": metadata,
            "name": name,
            "package_dimensions": null,
            "shippable": null,
            "statement_descriptor": null,
            "tax_code": null,
            "unit_label": null,
            "updated": now,
            "url": null,
        });
        self.products.insert(id.clone(), product.clone());
        self.remember(&id);
        Ok(product)
    }

    pub fn retrieve_product(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.products
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("product", id, None))
    }

    pub fn create_price(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "currency",
                "unit_amount",
                "product",
                "recurring",
                "lookup_key",
                "transfer_lookup_key",
                "nickname",
                "metadata",
                "active",
                "expand",
            ],
        )?;
        if params.get("product_data").is_some() {
            return Err(super::not_implemented("product_data (create the product first)"));
        }
        let currency = p.required("currency")?;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(invalid(Some("currency"), format!("Invalid currency: {currency}")));
        }
        let unit_amount = p
            .integer("unit_amount")?
            .ok_or_else(|| invalid(Some("unit_amount"), "Missing required param: unit_amount."))?;
        if unit_amount < 0 {
            return Err(invalid(
                Some("unit_amount"),
                "Invalid non-negative integer: unit_amount",
            ));
        }
        let product = p.required("product")?;
        if !self.products.contains_key(product) {
            return Err(no_such("product", product, Some("product")));
        }
        let interval = match params.get("recurring") {
            None => None,
            Some(Value::Object(recurring)) => {
                if let Some(other) = recurring.keys().find(|k| *k != "interval") {
                    return Err(invalid(
                        Some(&format!("recurring[{other}]")),
                        format!("Received unknown parameter: recurring[{other}]"),
                    ));
                }
                match recurring.get("interval").and_then(Value::as_str) {
                    Some(interval @ ("day" | "week" | "month" | "year")) => Some(interval.to_owned()),
                    _ => {
                        return Err(invalid(
                            Some("recurring[interval]"),
                            "Invalid recurring[interval]: must be one of day, week, month, or year",
                        ));
                    }
                }
            }
            Some(_) => return Err(invalid(Some("recurring"), "Invalid object: recurring must be a hash")),
        };
        let lookup_key = p.string("lookup_key")?.filter(|key| !key.is_empty());
        if let Some(key) = lookup_key {
            self.claim_lookup_key(key, p.boolean("transfer_lookup_key")?.unwrap_or(false))?;
        }
        let id = short_id("price");
        let spec = PriceSpec {
            id: id.clone(),
            product: product.to_owned(),
            nickname: p.string("nickname")?.map(str::to_owned),
            currency: currency.to_owned(),
            unit_amount,
            interval,
        };
        let mut price = objects::price(&spec, now);
        price["lookup_key"] = json!(lookup_key);
        price["active"] = json!(p.boolean("active")?.unwrap_or(true));
        if let Some(metadata) = p.metadata(&json!({}))? {
            price["metadata"] = metadata;
        }
        self.prices.insert(id.clone(), price.clone());
        self.remember(&id);
        Ok(price)
    }

    /// A lookup key names one price: taken from the price holding it when asked, refused
    /// otherwise.
    fn claim_lookup_key(&mut self, key: &str, transfer: bool) -> Result<(), Failure> {
        let holder = self
            .prices
            .iter()
            .find(|(_, price)| price["lookup_key"] == key)
            .map(|(id, _)| id.clone());
        match holder {
            None => Ok(()),
            Some(holder) if transfer => {
                self.prices.get_mut(&holder).expect("found above")["lookup_key"] = Value::Null;
                Ok(())
            }
            Some(holder) => Err(invalid(
                Some("lookup_key"),
                format!("A price (`{holder}`) already uses that lookup key."),
            )),
        }
    }
}

//! `template.yaml` declares the billing table that `TABLE_DEFINITION` describes: the same keys,
//! the same indexes on the same attributes, the same TTL attribute. The code creates tables
//! from the definition (locally, in tests); AWS creates it from the template; they must agree.

use billing_adapters::TABLE_DEFINITION;
use serde_norway::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn billing_table() -> Value {
    let template = template();
    let tables: Vec<_> = template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::DynamoDB::Table")
        .cloned()
        .collect();
    assert_eq!(tables.len(), 1, "the template should declare exactly one table");
    tables[0]["Properties"].clone()
}

fn key_schema(schema: &Value) -> Vec<(String, String)> {
    schema
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap().to_owned(),
                k["KeyType"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn template_table_keys_match_the_table_definition() {
    let table = billing_table();
    assert_eq!(
        key_schema(&table["KeySchema"]),
        vec![
            (TABLE_DEFINITION.partition_key.to_owned(), "HASH".to_owned()),
            (TABLE_DEFINITION.sort_key.to_owned(), "RANGE".to_owned()),
        ]
    );
}

#[test]
fn template_table_indexes_match_the_table_definition() {
    let table = billing_table();
    let mut declared: Vec<_> = table["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|index| {
            assert_eq!(index["Projection"]["ProjectionType"], "ALL");
            (
                index["IndexName"].as_str().unwrap().to_owned(),
                key_schema(&index["KeySchema"]),
            )
        })
        .collect();
    let mut expected: Vec<_> = TABLE_DEFINITION
        .indexes
        .iter()
        .map(|i| {
            let mut schema = vec![(i.partition_key.to_owned(), "HASH".to_owned())];
            schema.extend(i.sort_key.map(|key| (key.to_owned(), "RANGE".to_owned())));
            (i.name.to_owned(), schema)
        })
        .collect();
    declared.sort();
    expected.sort();
    assert_eq!(declared, expected);
}

#[test]
fn template_table_declares_exactly_the_key_attributes_as_strings() {
    let table = billing_table();
    let mut declared: Vec<_> = table["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["AttributeType"], "S");
            a["AttributeName"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut expected = vec![
        TABLE_DEFINITION.partition_key.to_owned(),
        TABLE_DEFINITION.sort_key.to_owned(),
    ];
    expected.extend(TABLE_DEFINITION.indexes.iter().map(|i| i.partition_key.to_owned()));
    expected.extend(
        TABLE_DEFINITION
            .indexes
            .iter()
            .filter_map(|i| i.sort_key.map(str::to_owned)),
    );
    declared.sort();
    expected.sort();
    assert_eq!(declared, expected);
}

#[test]
fn template_table_expires_items_by_the_definition_ttl_attribute() {
    let table = billing_table();
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"],
        TABLE_DEFINITION.ttl_attribute
    );
    assert_eq!(table["TimeToLiveSpecification"]["Enabled"], true);
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
}

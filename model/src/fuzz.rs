//! Fuzzing of the validation rules (proptest, on stable Rust): any text a
//! client can send is answered with `Ok` or a `ValidationError`, never a
//! panic, and an error never quotes more than a bounded part of it.
//! `scripts/fuzz.sh` runs these with many more cases.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::validate;

/// Text of every kind: long, unicode, control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[\\x00-\\x1f\\x7f\\u{1b}a-z]{0,40}",
        proptest::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect()),
        (1usize..20_000).prop_map(|n| "é".repeat(n)),
    ]
}

proptest! {
    #[test]
    fn fuzz_validation_never_panics_and_quotes_little(value in text(), key in text(), n in any::<u32>()) {
        let checks = [
            validate::service_name("f", &value).err(),
            validate::identifier("f", &value).err(),
            validate::ip_address("f", &value).err(),
            validate::holder("f", &value).err(),
            validate::text("f", &value, 1024, n % 2 == 0).err(),
            validate::tags("f", std::slice::from_ref(&value)).err(),
            validate::metadata("f", &BTreeMap::from([(key.clone(), value.clone())])).err(),
            validate::port("f", n).err(),
            validate::ttl_seconds("f", n).err(),
        ];
        for error in checks.into_iter().flatten() {
            let message = error.to_string();
            prop_assert!(message.len() < 2_000, "{} bytes", message.len());
            prop_assert!(!message.chars().any(|c| c.is_control()), "{message:?}");
        }
    }

    #[test]
    fn fuzz_quote_is_bounded(value in text()) {
        let quoted = validate::quote(&value);
        prop_assert!(quoted.chars().count() <= 64 * 10 + 40, "{}", quoted.len());
    }
}

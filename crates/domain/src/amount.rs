//! Money as an unsigned 256-bit integer in an asset's base units (sun, wei, satoshi).
//!
//! Amounts cross the system boundary as decimal strings ("12.5" USDT) and are parsed exactly
//! with the asset's number of decimals: there is no floating point anywhere on this path, so
//! "0.1" + "0.2" is exactly "0.3" and a token amount of 10^30 base units survives intact.

use std::fmt;

use ruint::aliases::U256;

/// Most decimals an asset may have: 10^77 is the largest power of ten below 2^256.
pub const DECIMALS_MAX: u8 = 77;

/// An amount in an asset's base units. It cannot be negative, and arithmetic is checked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(U256);

/// Why a decimal string is not a valid amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount must not be negative")]
    Negative,
    #[error("amount must be greater than zero")]
    Zero,
    #[error(
        "amount {0:?} is not a plain decimal number (digits, optionally one '.' and more digits)"
    )]
    NotDecimal(String),
    #[error("amount has {got} decimal places but the asset allows at most {max}")]
    TooManyDecimals { got: usize, max: u8 },
    #[error("amount is too large for 256 bits")]
    Overflow,
    #[error("an asset cannot have {0} decimals (at most {DECIMALS_MAX})")]
    DecimalsOutOfRange(u8),
}

impl Amount {
    pub const ZERO: Amount = Amount(U256::ZERO);

    pub fn from_base_units(units: U256) -> Self {
        Amount(units)
    }

    pub fn from_u128(units: u128) -> Self {
        Amount(U256::from(units))
    }

    pub fn base_units(&self) -> U256 {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// Parses a decimal string such as `"12.5"` into base units of an asset with `decimals`
    /// decimal places. The whole string must be digits with at most one `.` followed by at
    /// least one digit: signs, exponents, spaces and separators are refused, never guessed.
    pub fn parse_decimal(text: &str, decimals: u8) -> Result<Amount, AmountError> {
        if decimals > DECIMALS_MAX {
            return Err(AmountError::DecimalsOutOfRange(decimals));
        }
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if text.starts_with('-') {
            return Err(AmountError::Negative);
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || fraction.is_some_and(|fraction| !all_digits(fraction)) {
            return Err(AmountError::NotDecimal(text.chars().take(80).collect()));
        }
        let fraction = fraction.unwrap_or("");
        // Trailing zeros of the fraction carry no value, so "1.500000000" is fine for 6 decimals.
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > usize::from(decimals) {
            return Err(AmountError::TooManyDecimals {
                got: fraction.len(),
                max: decimals,
            });
        }
        let mut units = U256::ZERO;
        let ten = U256::from(10u8);
        let padding = usize::from(decimals) - fraction.len();
        let digits = whole
            .bytes()
            .chain(fraction.bytes())
            .chain(std::iter::repeat_n(b'0', padding));
        for digit in digits {
            units = units
                .checked_mul(ten)
                .and_then(|units| units.checked_add(U256::from(digit - b'0')))
                .ok_or(AmountError::Overflow)?;
        }
        Ok(Amount(units))
    }

    /// Like [`Amount::parse_decimal`], and zero is refused too: what a payout needs.
    pub fn parse_positive(text: &str, decimals: u8) -> Result<Amount, AmountError> {
        let amount = Amount::parse_decimal(text, decimals)?;
        if amount.is_zero() {
            return Err(AmountError::Zero);
        }
        Ok(amount)
    }

    /// Formats the amount as a decimal string with no trailing zeros in the fraction
    /// (`1500000` with 6 decimals is `"1.5"`), the inverse of [`Amount::parse_decimal`].
    pub fn format_decimal(&self, decimals: u8) -> String {
        let digits = self.0.to_string();
        let decimals = usize::from(decimals);
        if decimals == 0 {
            return digits;
        }
        let padded = if digits.len() <= decimals {
            format!("{}{digits}", "0".repeat(decimals - digits.len() + 1))
        } else {
            digits
        };
        let (whole, fraction) = padded.split_at(padded.len() - decimals);
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{fraction}")
        }
    }
}

/// Shows base units, never a decimal guess: the asset's decimals are not known here.
impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_known_values() {
        let cases: &[(&str, u8, &str, &str)] = &[
            // input, decimals, base units, canonical form
            ("0", 6, "0", "0"),
            ("1", 6, "1000000", "1"),
            ("1.5", 6, "1500000", "1.5"),
            ("0.000001", 6, "1", "0.000001"),
            ("1.500000000", 6, "1500000", "1.5"),
            ("007", 0, "7", "7"),
            ("12345.6789", 8, "1234567890000", "12345.6789"),
            ("0.1", 18, "100000000000000000", "0.1"),
            (
                "115792089237316195423570985008687907853269984665640564039457584007913129639935",
                0,
                "115792089237316195423570985008687907853269984665640564039457584007913129639935",
                "115792089237316195423570985008687907853269984665640564039457584007913129639935",
            ),
        ];
        for &(input, decimals, units, canonical) in cases {
            let amount = Amount::parse_decimal(input, decimals).unwrap();
            assert_eq!(amount.base_units().to_string(), units, "{input}");
            assert_eq!(amount.format_decimal(decimals), canonical, "{input}");
        }
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let cases: &[(&str, u8, AmountError)] = &[
            ("", 6, AmountError::Empty),
            ("-1", 6, AmountError::Negative),
            (
                "1.2345678",
                6,
                AmountError::TooManyDecimals { got: 7, max: 6 },
            ),
            ("0.1", 0, AmountError::TooManyDecimals { got: 1, max: 0 }),
            ("1e6", 6, AmountError::NotDecimal("1e6".into())),
            ("1.", 6, AmountError::NotDecimal("1.".into())),
            (".5", 6, AmountError::NotDecimal(".5".into())),
            ("+1", 6, AmountError::NotDecimal("+1".into())),
            (" 1", 6, AmountError::NotDecimal(" 1".into())),
            ("1,5", 6, AmountError::NotDecimal("1,5".into())),
            ("1.2.3", 6, AmountError::NotDecimal("1.2.3".into())),
            ("1_000", 6, AmountError::NotDecimal("1_000".into())),
            ("NaN", 6, AmountError::NotDecimal("NaN".into())),
            ("１", 6, AmountError::NotDecimal("１".into())),
            (
                "115792089237316195423570985008687907853269984665640564039457584007913129639936",
                0,
                AmountError::Overflow,
            ),
            ("1", 78, AmountError::DecimalsOutOfRange(78)),
            (
                "200000000000000000000000000000000000000000000000000000000000000000000000",
                6,
                AmountError::Overflow,
            ),
        ];
        for (input, decimals, expected) in cases {
            assert_eq!(
                Amount::parse_decimal(input, *decimals).unwrap_err(),
                *expected,
                "{input:?}"
            );
        }
        assert_eq!(
            Amount::parse_positive("0.000", 6).unwrap_err(),
            AmountError::Zero
        );
        assert!(Amount::parse_positive("0.000001", 6).is_ok());
    }

    #[test]
    fn decimal_sums_are_exact() {
        let a = Amount::parse_decimal("0.1", 18).unwrap();
        let b = Amount::parse_decimal("0.2", 18).unwrap();
        assert_eq!(
            a.checked_add(b).unwrap(),
            Amount::parse_decimal("0.3", 18).unwrap()
        );
        assert_eq!(Amount::ZERO.checked_sub(Amount::from_u128(1)), None);
        assert_eq!(
            Amount::from_base_units(U256::MAX).checked_add(Amount::from_u128(1)),
            None
        );
    }

    fn any_u256() -> impl Strategy<Value = U256> {
        proptest::array::uniform4(any::<u64>()).prop_map(U256::from_limbs)
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(units in any_u256(), decimals in 0u8..=DECIMALS_MAX) {
            let amount = Amount::from_base_units(units);
            let text = amount.format_decimal(decimals);
            prop_assert_eq!(Amount::parse_decimal(&text, decimals), Ok(amount));
        }

        #[test]
        fn parse_then_format_is_canonical(whole in "[0-9]{1,30}", fraction in "[0-9]{0,18}", decimals in 18u8..=30) {
            let text = if fraction.is_empty() { whole.clone() } else { format!("{whole}.{fraction}") };
            let amount = Amount::parse_decimal(&text, decimals).unwrap();
            let canonical = amount.format_decimal(decimals);
            // The canonical form parses back to the same amount and has no redundant zeros.
            prop_assert_eq!(Amount::parse_decimal(&canonical, decimals), Ok(amount));
            prop_assert!(!canonical.ends_with('0') || !canonical.contains('.'));
            prop_assert!(canonical == "0" || !canonical.starts_with('0') || canonical.starts_with("0."));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,100}", decimals in 0u8..=80) {
            let _ = Amount::parse_decimal(&text, decimals);
        }
    }
}

//! What a transfer will burn, from the chain's own prices (`getchainparameters`, never
//! hard-coded) and the sender's resources (`getaccountresource`). Energy comes from a
//! simulation of the very call (`triggerconstantcontract`), which already says what a
//! transfer to an address that never held the token costs (about twice the energy: the
//! token's storage slot for it is created).

/// The prices the chain sets, in sun.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prices {
    /// `getEnergyFee`: sun per unit of energy burned.
    pub energy: u64,
    /// `getTransactionFee`: sun per byte of bandwidth burned.
    pub bandwidth: u64,
    /// `getCreateAccountFee`: burned for the bandwidth of a TRX transfer that activates its
    /// recipient, when the sender's staked bandwidth does not cover it.
    pub create_account: u64,
    /// `getCreateNewAccountFeeInSystemContract`: burned by the transfer itself when it
    /// activates its recipient.
    pub create_account_in_contract: u64,
    /// `getCreateNewAccountBandwidthRate`: how many times its size in staked bandwidth an
    /// activating transfer uses.
    pub create_account_bandwidth_rate: u64,
}

/// The sender's resources now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub energy_available: u64,
    /// Bandwidth from TRX staked for it (`NetLimit - NetUsed`).
    pub staked_bandwidth: u64,
    /// The daily free bandwidth left (`freeNetLimit - freeNetUsed`).
    pub free_bandwidth: u64,
}

/// What one transfer needs and what it burns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeEstimate {
    pub energy: u64,
    pub bandwidth_bytes: u64,
    /// TRX burned, in sun, at the current prices and resources.
    pub burn: u64,
}

/// The estimate for a transaction of `size` bytes that needs `energy` (0 for TRX) and, for a
/// TRX transfer, activates its recipient when `activates` is set.
pub fn estimate(
    prices: Prices,
    resources: Resources,
    size: u64,
    energy: u64,
    activates: bool,
) -> FeeEstimate {
    let energy_burn = energy
        .saturating_sub(resources.energy_available)
        .saturating_mul(prices.energy);
    // java-tron's BandwidthProcessor.consume. A transfer that activates its recipient pays
    // its bandwidth the account-creation way (consumeForCreateNewAccount): staked bandwidth
    // of size × the creation rate, else the creation fee; free bandwidth is not used, and the
    // transfer's own bytes are not charged again. Plus the fee the transfer itself burns for
    // the new account (TransferActuator).
    // Otherwise the bandwidth comes from one source, whole (useAccountNet, else useFreeNet,
    // else useTransactionFee): staked bandwidth if it covers the whole size, else free
    // bandwidth if that does, else the whole size is burned. The two are never added up.
    let bandwidth_burn = if activates {
        let needed = size.saturating_mul(prices.create_account_bandwidth_rate);
        let bandwidth = if resources.staked_bandwidth >= needed {
            0
        } else {
            prices.create_account
        };
        bandwidth.saturating_add(prices.create_account_in_contract)
    } else if resources.staked_bandwidth >= size || resources.free_bandwidth >= size {
        0
    } else {
        size.saturating_mul(prices.bandwidth)
    };
    FeeEstimate {
        energy,
        bandwidth_bytes: size,
        burn: energy_burn.saturating_add(bandwidth_burn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICES: Prices = Prices {
        energy: 100,
        bandwidth: 1_000,
        create_account: 100_000,
        create_account_in_contract: 1_000_000,
        create_account_bandwidth_rate: 1,
    };

    #[test]
    fn burns_what_the_resources_do_not_cover() {
        let none = Resources::default();
        // A TRC-20 transfer to a holder: 64,285 energy and 345 bytes, all burned.
        assert_eq!(
            estimate(PRICES, none, 345, 64_285, false).burn,
            6_428_500 + 345_000
        );
        // A first-time holder needs about twice the energy, and burns about twice.
        let new_holder = estimate(PRICES, none, 345, 130_285, false);
        assert_eq!(new_holder.burn, 13_028_500 + 345_000);
        // Staked energy and free bandwidth cover what they can.
        let staked = Resources {
            energy_available: 60_000,
            staked_bandwidth: 0,
            free_bandwidth: 600,
        };
        assert_eq!(estimate(PRICES, staked, 345, 64_285, false).burn, 428_500);
        // A TRX transfer that activates its recipient: free bandwidth does not pay for the
        // creation, so the creation fee for its bandwidth, and the contract's creation fee
        // (1.1 TRX, as the recorded mainnet receipt
        // wallet_gettransactioninfobyid.mainnet_trx_transfer_new_account_fee.json shows).
        assert_eq!(estimate(PRICES, staked, 268, 0, true).burn, 1_100_000);
        // Staked bandwidth of the size times the rate covers the creation's bandwidth.
        let staked_net = Resources {
            energy_available: 0,
            staked_bandwidth: 268,
            free_bandwidth: 0,
        };
        assert_eq!(estimate(PRICES, staked_net, 268, 0, true).burn, 1_000_000);
        let rate_two = Prices {
            create_account_bandwidth_rate: 2,
            ..PRICES
        };
        assert_eq!(estimate(rate_two, staked_net, 268, 0, true).burn, 1_100_000);
        assert_eq!(
            estimate(
                PRICES,
                Resources {
                    energy_available: 0,
                    staked_bandwidth: 0,
                    free_bandwidth: 100
                },
                268,
                0,
                false
            )
            .burn,
            268_000
        );
        // Staked and free bandwidth that each fall short are not added up: the whole size
        // is burned (200 + 200 bytes would cover 345, but no one source does).
        let split = Resources {
            energy_available: 0,
            staked_bandwidth: 200,
            free_bandwidth: 200,
        };
        assert_eq!(estimate(PRICES, split, 345, 0, false).burn, 345_000);
        // Either one alone that covers it is enough.
        for (staked, free) in [(345, 0), (0, 345), (1_000, 10)] {
            let resources = Resources {
                energy_available: 0,
                staked_bandwidth: staked,
                free_bandwidth: free,
            };
            assert_eq!(
                estimate(PRICES, resources, 345, 0, false).burn,
                0,
                "{staked} {free}"
            );
        }
    }
}

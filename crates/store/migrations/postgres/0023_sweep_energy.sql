-- TRON consolidation (issue 16, item 4): where a TRC-20 sweep's energy came from, and what it
-- cost. A sweep whose deposit address lacks energy gets it by Stake 2.0 delegation from the
-- staking account (`energy_source = 'delegation'`: `delegate_from` lends `delegate_balance`
-- staked sun; the payouts `delegate:<id>` and `reclaim:<id>`, from the staking account, are
-- attempts stored before broadcast like every other payment) or by TRX topped up to the
-- address and burned (`'burn'`: the top-up columns of 0022). `reclaim_state` is 'pending'
-- from the moment a delegation is priced until its energy is taken back (or its delegation
-- provably never landed): a sweep that ended, swept or failed, with a reclaim pending is not
-- finished. On TRON, 0022's `price_per_gas` is the sun per unit of energy and `gas_limit` the
-- energy the sweep needs (for a TRX sweep, its bandwidth bytes). `energy_used` and
-- `bandwidth_used` are the sweep's receipt. Never edit this file once applied.

alter table sweep add column energy_source text
    check (energy_source is null or energy_source in ('delegation', 'burn'));
alter table sweep add column delegate_from text
    check (delegate_from is null or length(delegate_from) between 1 and 100);
alter table sweep add column delegate_balance text
    check (delegate_balance is null or delegate_balance ~ '^[1-9][0-9]*$');
alter table sweep add column delegate_txid text;
alter table sweep add column delegate_fee text
    check (delegate_fee is null or delegate_fee ~ '^[0-9]+$');
alter table sweep add column reclaim_txid text;
alter table sweep add column reclaim_fee text
    check (reclaim_fee is null or reclaim_fee ~ '^[0-9]+$');
alter table sweep add column reclaim_state text
    check (reclaim_state is null or reclaim_state in ('pending', 'done'));
alter table sweep add column energy_used bigint check (energy_used is null or energy_used >= 0);
alter table sweep add column bandwidth_used bigint
    check (bandwidth_used is null or bandwidth_used >= 0);
alter table sweep add constraint sweep_delegation
    check ((energy_source = 'delegation') = (delegate_from is not null and delegate_balance is not null
                                             and reclaim_state is not null));

create index sweep_reclaim on sweep (chain, id) where reclaim_state = 'pending';

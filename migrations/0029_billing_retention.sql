-- Billing records expire 7 years after they are made, like every other retention class.
--
-- The ledger cannot simply lose its old rows: balances are the sum of the postings. The
-- retention run closes each workspace's expired period the way accounting systems do: in one
-- transaction it writes a `carry_forward` transaction dated at the cut-off whose postings hold,
-- per account, the sum of the expired postings (so they still sum to zero, and every
-- account's sum is unchanged), then deletes the expired transactions and their postings.
-- Statements read it as the opening balance, never as a movement of the month.
alter table ledger_transactions drop constraint ledger_transactions_kind_check;
alter table ledger_transactions add constraint ledger_transactions_kind_check check (
  kind in ('grant', 'topup', 'refund', 'reserve', 'settle', 'release', 'adjust', 'expire', 'carry_forward'));

-- No new index: the run finds each workspace's old transactions through
-- ledger_transactions_workspace_time_idx, and their reservations by id (an index on the hot
-- path's tables would cost every call).

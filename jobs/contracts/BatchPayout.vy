# pragma version 0.4.3
# pragma evm-version cancun
"""
@title BatchPayout
@notice Pays many recipients in one transaction, from the caller's own funds only.
@dev No storage, no owner, no other functions. The native path pays out of msg.value and keeps
     nothing; the token path only calls transferFrom(msg.sender, ...), so an allowance given to
     this contract can be spent by the approving wallet's own transactions and by nobody else.
"""

interface ERC20:
    def transferFrom(_from: address, _to: address, _amount: uint256) -> bool: nonpayable

MAX_RECIPIENTS: constant(uint256) = 1000


@external
@payable
def pay_native(recipients: DynArray[address, MAX_RECIPIENTS], amounts: DynArray[uint256, MAX_RECIPIENTS]):
    assert len(recipients) == len(amounts), "length mismatch"
    total: uint256 = 0
    for i: uint256 in range(len(recipients), bound=MAX_RECIPIENTS):
        total += amounts[i]
        # A fixed message instead of the recipient's own revert data: a recipient that refuses
        # the coin (or runs out of gas) is named by the caller's simulation, not by its output.
        ok: bool = raw_call(recipients[i], b"", value=amounts[i], revert_on_failure=False)
        assert ok, "native transfer failed"
    # Every wei sent in is paid out: nothing can stay in the contract.
    assert total == msg.value, "value mismatch"


@external
def pay_token(token: address, recipients: DynArray[address, MAX_RECIPIENTS], amounts: DynArray[uint256, MAX_RECIPIENTS]):
    assert len(recipients) == len(amounts), "length mismatch"
    for i: uint256 in range(len(recipients), bound=MAX_RECIPIENTS):
        # USDT-style tokens return nothing: treat an empty answer as success, a false as failure.
        assert extcall ERC20(token).transferFrom(msg.sender, recipients[i], amounts[i], default_return_value=True), "transfer failed"

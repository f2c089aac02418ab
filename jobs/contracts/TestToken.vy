# pragma version 0.4.3
# pragma evm-version cancun
"""
@title TestToken
@notice Minimal ERC-20 used as the local development stand-in for USDT.
@dev The deployer becomes the owner and is the only account allowed to mint.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

name: public(String[64])
symbol: public(String[32])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
owner: public(address)


@deploy
def __init__(_name: String[64], _symbol: String[32], _decimals: uint8, _initial_supply: uint256):
    self.name = _name
    self.symbol = _symbol
    self.decimals = _decimals
    self.owner = msg.sender
    self._mint(msg.sender, _initial_supply)


@internal
def _mint(_to: address, _amount: uint256):
    assert _to != empty(address), "mint to zero address"
    self.totalSupply += _amount
    self.balanceOf[_to] += _amount
    log Transfer(sender=empty(address), receiver=_to, value=_amount)


@internal
def _transfer(_from: address, _to: address, _amount: uint256):
    assert _to != empty(address), "transfer to zero address"
    assert self.balanceOf[_from] >= _amount, "insufficient balance"
    self.balanceOf[_from] -= _amount
    self.balanceOf[_to] += _amount
    log Transfer(sender=_from, receiver=_to, value=_amount)


@external
def transfer(_to: address, _amount: uint256) -> bool:
    self._transfer(msg.sender, _to, _amount)
    return True


@external
def transferFrom(_from: address, _to: address, _amount: uint256) -> bool:
    allowed: uint256 = self.allowance[_from][msg.sender]
    assert allowed >= _amount, "insufficient allowance"
    # An unlimited approval is not consumed, matching common ERC-20 behaviour.
    if allowed != max_value(uint256):
        self.allowance[_from][msg.sender] = allowed - _amount
    self._transfer(_from, _to, _amount)
    return True


@external
def approve(_spender: address, _amount: uint256) -> bool:
    self.allowance[msg.sender][_spender] = _amount
    log Approval(owner=msg.sender, spender=_spender, value=_amount)
    return True


@external
def mint(_to: address, _amount: uint256):
    assert msg.sender == self.owner, "only owner"
    self._mint(_to, _amount)

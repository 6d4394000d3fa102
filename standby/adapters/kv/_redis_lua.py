"""The Lua scripts the Redis transport runs: each a compare-and-swap, atomic on the server.

Private to :mod:`standby.adapters.redis`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DROP_FIELD", "PUT_FIELD", "SWAP_CLAIM"]

# Compare-and-swap of one hash field, then a notification naming the field.
# KEYS[1] hash; ARGV: field, expected-absent ('1'/'0'), expected, new, channel.
PUT_FIELD: Final = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (ARGV[2] == '1' and current == false) or (ARGV[2] == '0' and current == ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  redis.call('PUBLISH', ARGV[5], ARGV[1])
  return {1}
end
if current == false then return {0} end
return {0, current}
"""

# Compare-and-swap of a claim key, writing (or deleting) the claimant's proof too.
# KEYS[1] claim key, KEYS[2] claimant's hash; ARGV: expected-absent, expected,
# new ('' deletes), proof field, time to live in ms ('' keeps it for ever).
SWAP_CLAIM: Final = """
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '1' and current == false) or (ARGV[1] == '0' and current == ARGV[2]) then
  if ARGV[3] == '' then
    redis.call('DEL', KEYS[1])
    redis.call('HDEL', KEYS[2], ARGV[4])
  else
    if ARGV[5] == '' then
      redis.call('SET', KEYS[1], ARGV[3])
    else
      redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[5])
    end
    redis.call('HSET', KEYS[2], ARGV[4], ARGV[3])
  end
  return {1}
end
if current == false then return {0} end
return {0, current}
"""


# Delete one field of a hash iff it still holds the value read (the sweep of
# fields older than the retention). KEYS[1] hash; ARGV: field, expected.
DROP_FIELD: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

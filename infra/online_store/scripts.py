"""The online store's Lua scripts, generated from the declared aggregates (``railyard.feature_spec``)
when a store is opened: the reads fetch every declared field, the apply updates every declared
aggregate.

In the apply, an event adds to a ``sum`` what it contributes (the product of its factors;
HINCRBYFLOAT where ratings are in it, HINCRBY otherwise; per genre of the event's movie for a
genre vector; nothing for 0), and replaces an entity's ``latest`` values when it is later than the
latest event the entity's hash records in ``@ts`` and ``@id``: a greater timestamp, or the same
one and a greater id of the other entity. Timestamps and ids are compared as decimal text (ids
reach 2**63 - 1, beyond the exact integers of a Lua number), so events in any order, a replay
included, leave the same values.
"""

from __future__ import annotations

from infra.online_store import keys
from railyard.feature_spec import Aggregate, aggregates

_FACTOR = {"rating": "tonumber(rating)", "label": "label"}  # per event; "one" is 1, "genres" a loop
_KEY = {"user": "u", "movie": "m"}  # the Lua variables holding the entity hashes' keys
_OTHER_ID = {"user": "movie", "movie": "user"}  # the Lua variables holding the other entity's id


def _lua_list(names) -> str:
    return "{" + ",".join(f"'{name}'" for name in names) + "}"


def read_pairs() -> str:
    """KEYS: pointer; ARGV: namespaces prefix, number of users, user ids..., movie ids...
    Every user's and movie's declared fields and each movie's genre indexes."""
    return f"""
local ns = redis.call('GET', KEYS[1])
if not ns then return redis.error_reply('NONAMESPACE') end
local base = ARGV[1] .. ns .. ':'
local n_users = tonumber(ARGV[2])
local user_fields, movie_fields = {_lua_list(keys.fields("user"))}, {_lua_list(keys.fields("movie"))}
local users, movies, genres = {{}}, {{}}, {{}}
for i = 3, 2 + n_users do
  users[#users + 1] = redis.call('HMGET', base .. 'u:' .. ARGV[i], unpack(user_fields))
end
for i = 3 + n_users, #ARGV do
  movies[#movies + 1] = redis.call('HMGET', base .. 'm:' .. ARGV[i], unpack(movie_fields))
  genres[#genres + 1] = redis.call('HGET', base .. 'genres', ARGV[i])
end
return {{users, movies, genres}}
"""


def read_candidates() -> str:
    """KEYS: pointer; ARGV: namespaces prefix, user id, candidates wanted, ZREVRANGE window. The
    most popular movies (ratings count, ties by movieId descending as text: ZREVRANGE's order)
    that the user has not rated, then the user's and each candidate's fields, as ``read_pairs``."""
    return f"""
local ns = redis.call('GET', KEYS[1])
if not ns then return redis.error_reply('NONAMESPACE') end
local base = ARGV[1] .. ns .. ':'
local user, wanted, window = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local pop, rated = base .. 'pop', base .. 'r:' .. user
local kept = redis.call('HEXISTS', base .. 'meta', 'candidates')
local popular = redis.call('ZCARD', pop)
local candidates, start = {{}}, 0
while #candidates < wanted and start < popular do
  local ids = redis.call('ZREVRANGE', pop, start, start + window - 1)
  local seen = redis.call('SMISMEMBER', rated, unpack(ids))
  for i = 1, #ids do
    if seen[i] == 0 then
      candidates[#candidates + 1] = ids[i]
      if #candidates == wanted then break end
    end
  end
  start = start + window
end
local user_values = redis.call('HMGET', base .. 'u:' .. user, unpack({_lua_list(keys.fields("user"))}))
local movie_fields = {_lua_list(keys.fields("movie"))}
local movies, genres = {{}}, {{}}
for i = 1, #candidates do
  movies[i] = redis.call('HMGET', base .. 'm:' .. candidates[i], unpack(movie_fields))
  genres[i] = redis.call('HGET', base .. 'genres', candidates[i])
end
return {{candidates, {{user_values}}, movies, genres, popular, kept}}
"""


def apply() -> str:
    """KEYS: pointer; ARGV: namespaces prefix, then per event: user, movie, rating, label (0/1),
    timestamp. Returns how many events were new, and per conflicting event its place in the batch
    (from 1) and the rating the store counts for it."""
    declared = [*aggregates("user"), *aggregates("movie")]
    genres = "    local genres = redis.call('HGET', base .. 'genres', movie) or ''\n"
    updates = "".join(_updates(entity) for entity in ("user", "movie"))
    return f"""
local ns = redis.call('GET', KEYS[1])
if not ns then return redis.error_reply('NONAMESPACE') end
local base = ARGV[1] .. ns .. ':'
-- Whether decimal text a (no sign, no leading zero) stands for a greater number than b.
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
-- Whether the event (ts, other) is later than the latest one the entity's hash records.
local function later(key, ts, other)
  local seen = redis.call('HMGET', key, '{keys.LATEST_TS}', '{keys.LATEST_ID}')
  if not seen[1] then return true end
  if ts ~= seen[1] then return greater(ts, seen[1]) end
  return greater(other, seen[2])
end
local applied, last, last_text, conflicts = 0, nil, nil, {{}}
for i = 2, #ARGV, 5 do
  local user, movie, rating, label, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
  local marks, event = base .. 'a:' .. user, movie .. ':' .. ts
  if redis.call('HSETNX', marks, event, rating) == 0 then
    local counted = redis.call('HGET', marks, event)
    if tonumber(counted) ~= tonumber(rating) then
      conflicts[#conflicts + 1] = (i - 2) / 5 + 1
      conflicts[#conflicts + 1] = counted
    end
  else
    local u, m = base .. 'u:' .. user, base .. 'm:' .. movie
{genres if any(aggregate.per_genre for aggregate in declared) else ""}{updates}\
    redis.call('SADD', base .. 'r:' .. user, movie)
    redis.call('ZINCRBY', base .. 'pop', 1, movie)
    applied = applied + 1
    if last == nil or tonumber(ts) > last then last, last_text = tonumber(ts), ts end
  end
end
if applied > 0 then
  local meta = base .. 'meta'
  redis.call('HINCRBY', meta, 'events', applied)
  local previous = redis.call('HGET', meta, 'last_ts')
  if not previous or last > tonumber(previous) then redis.call('HSET', meta, 'last_ts', last_text) end
end
return {{applied, conflicts}}
"""


def _updates(entity: str) -> str:
    """The Lua statements that add a new event to the entity's declared aggregates."""
    key, lines = _KEY[entity], []
    latest = [aggregate for aggregate in aggregates(entity) if aggregate.kind == "latest"]
    for aggregate in aggregates(entity):
        if aggregate.kind == "sum":
            command = "HINCRBYFLOAT" if aggregate.is_float else "HINCRBY"
            lines += _each_genre_or_once(aggregate, f"redis.call('{command}', {key}, %s, v)", indent="    ")
    if latest:
        lines.append(f"    if later({key}, ts, {_OTHER_ID[entity]}) then")
        setting = [f"'{keys.LATEST_TS}', ts", f"'{keys.LATEST_ID}', {_OTHER_ID[entity]}"]
        setting += [f"'{aggregate.field}', {_value(aggregate)}" for aggregate in latest if not aggregate.per_genre]
        lines.append(f"      redis.call('HSET', {key}, {', '.join(setting)})")
        for aggregate in (aggregate for aggregate in latest if aggregate.per_genre):
            lines.append(f"      redis.call('HDEL', {key}, unpack({_lua_list(aggregate.fields)}))")
            lines += _each_genre_or_once(aggregate, f"redis.call('HSET', {key}, %s, v)", indent="      ")
        lines.append("    end")
    return "".join(line + "\n" for line in lines)


def _each_genre_or_once(aggregate: Aggregate, call: str, indent: str) -> list[str]:
    """``call`` (``%s``: the field) with the event's value ``v`` for the aggregate's field, or for
    each of its genre fields that the event's movie has; nothing when the value is 0 (a missing
    field is 0)."""
    if aggregate.per_genre:
        body = ["for genre in string.gmatch(genres, '%d+') do", "  " + call % f"'{aggregate.field}.' .. genre", "end"]
    else:
        body = [call % f"'{aggregate.field}'"]
    lines = ["do", f"  local v = {_value(aggregate)}", "  if tonumber(v) ~= 0 then", *("    " + line for line in body)]
    return [indent + line for line in (*lines, "  end", "end")]


def _value(aggregate: Aggregate) -> str:
    """A Lua expression of what one event contributes (per genre, for a genre vector). A lone
    rating or time stays its text (exact, as the event carried it); a time is multiplied by 0/1
    factors only (``feature_spec``), so it is the time or 0."""
    parts = [factor for factor in aggregate.factors if factor not in ("one", "genres")]
    if aggregate.is_time:
        flags = [_FACTOR[factor] for factor in parts if factor != "timestamp"]
        return f"({' * '.join(flags)} ~= 0 and ts or 0)" if flags else "ts"
    if parts == ["rating"]:
        return "rating"
    return " * ".join(_FACTOR[factor] for factor in parts) or "1"

"""The one read step every list passes through: a Redis Function, callable from any language.

Every read — a user's list, a model's list, the fallback, a category list,
an item's similar items — is one ``FCALL_RO streamrec_read`` (``FCALL`` works
too) that filters the stored list in Redis and returns what may be served.
The function is the same Lua code for every kind of list, so no path can
leak an item that another path hides. The worker loads it at start
(``FUNCTION LOAD REPLACE``; on a cluster on every master), and so does
:class:`~streamrec.store.RecsClient` when a server does not have it yet.

Call (``NN`` is the two-digit bucket of the user, or of the item for similar
items; every key carries the hash tag ``{NN}``, so the call works on a Redis
Cluster, where multi-key commands across slots are refused)::

    FCALL_RO streamrec_read <numkeys>
        <list key>                          the list to serve (may be missing)
        {prefix}:hidden:{NN}                hash: item -> time it is hidden from (0: now)
        {prefix}:tags:{NN}                  hash: item -> JSON tags, for items whose tags changed
        {prefix}:not-interested:{NN}:<user> set: the user's "not interested" items
        {prefix}:excluded:{NN}:<user>       set: items excluded for the user (not feedback)
        [filler keys...]                    lists that fill up a short answer, in order
        <k> <at most m per category, 0: no limit> <number of categories c>
        <category 1> ... <category c> [items to leave out...]

Reads not for a user pass ``{prefix}:not-interested:{NN}:`` and
``{prefix}:excluded:{NN}:`` (no user: keys that never exist). The fillers are
the bucket's fallback copy ``{prefix}:fallback:{NN}``, or with categories the
category lists ``{prefix}:category:{NN}:<category>``.

A candidate is served when it is not hidden at the server's clock (``TIME``:
expiry needs no event), not in either set of the user, not left out by the
request, tagged with one of the categories when some are asked for, and, with
``m > 0``, none of its tags already has ``m`` items in the answer. The list's
own items come first, then the fillers' (each item once), until ``k``.

The reply is a JSON object::

    {"items": [...], "scores": [...], "reasons": [..., null], "model": "sasrec",
     "computed_at": 1763870000.1, "event_ts": 881250949.0, "ingest_ts": 1763869999.9,
     "fallback": false, "filled": 2}

``fallback`` is true when the list itself is missing (the answer comes from
the fillers); ``filled`` counts the items taken from fillers. A stored list
holds at most a few thousand items (Lua's stack bounds one ``HMGET``).

Examples
--------
>>> call = ReadCall(["streamrec:recs:{22}:196", "streamrec:hidden:{22}", "streamrec:tags:{22}",
...                  "streamrec:not-interested:{22}:196", "streamrec:excluded:{22}:196"],
...                 fillers=["streamrec:category:{22}:Shoes"], k=10, categories=["Shoes"], leave_out=["sku-9"])
>>> " ".join(call.command())
'FCALL_RO streamrec_read 6 streamrec:recs:{22}:196 streamrec:hidden:{22} streamrec:tags:{22} \
streamrec:not-interested:{22}:196 streamrec:excluded:{22}:196 streamrec:category:{22}:Shoes 10 0 1 Shoes sku-9'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FUNCTION_NAME", "LIBRARY_NAME", "READ_LIBRARY", "ReadCall", "is_missing_function", "load_library"]

LIBRARY_NAME = "streamrec"
FUNCTION_NAME = "streamrec_read"

#: The Lua library (Redis 7 Functions). Loaded with ``FUNCTION LOAD REPLACE``.
READ_LIBRARY = r"""#!lua name=streamrec
-- streamrec: the read step every served list passes through (see streamrec/read_protocol.py).

local function json_list(values)
  local parts = {}
  for i = 1, #values do
    local v = values[i]
    if v == nil or v == cjson.null or v == false then
      parts[i] = 'null'
    else
      parts[i] = cjson.encode(v)
    end
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function read(keys, args)
  local k = tonumber(args[1])
  local per_tag = tonumber(args[2])
  local ncat = tonumber(args[3])
  if k == nil or per_tag == nil or ncat == nil or k < 0 or ncat < 0 then
    return redis.error_reply('streamrec_read: arguments are <k> <m> <number of categories> ...')
  end
  local wanted = nil
  if ncat > 0 then
    wanted = {}
    for i = 1, ncat do wanted[args[3 + i]] = true end
  end
  local skip = {}
  for i = 4 + ncat, #args do skip[args[i]] = true end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

  local out_items, out_scores, out_reasons = {}, {}, {}
  local per_tag_count = {}
  local filled = 0
  local model, computed_at, event_ts, ingest_ts = nil, nil, nil, nil

  -- filter one chunk of candidates (items of one stored document) into the answer
  local function take(doc, from_filler)
    local items = doc['items'] or {}
    local scores = doc['scores'] or {}
    local reasons = doc['reasons']
    local tags = doc['tags']
    local cand, pos = {}, {}
    for j = 1, #items do
      local item = items[j]
      if type(item) == 'number' then item = tostring(item) end
      if not skip[item] then
        skip[item] = true -- each item at most once, from the first list that holds it
        cand[#cand + 1] = item
        pos[#pos + 1] = j
      end
    end
    if #cand == 0 then return end
    local hidden = redis.call('HMGET', keys[2], unpack(cand))
    local changed = redis.call('HMGET', keys[3], unpack(cand))
    local refused = redis.call('SMISMEMBER', keys[4], unpack(cand))
    local excluded = redis.call('SMISMEMBER', keys[5], unpack(cand))
    for n = 1, #cand do
      if #out_items >= k then return end
      local ok = refused[n] == 0 and excluded[n] == 0
      if ok and hidden[n] then ok = now < tonumber(hidden[n]) end
      local item_tags = nil
      if ok and (wanted or per_tag > 0) then
        if changed[n] then
          item_tags = cjson.decode(changed[n])
        elseif tags and tags[pos[n]] ~= cjson.null then
          item_tags = tags[pos[n]]
        end
        item_tags = item_tags or {}
        if wanted then
          local any = false
          for _, tag in ipairs(item_tags) do if wanted[tag] then any = true break end end
          ok = any
        end
        if ok and per_tag > 0 then
          local counted = item_tags
          if #counted == 0 then counted = {''} end
          for _, tag in ipairs(counted) do
            if (per_tag_count[tag] or 0) >= per_tag then ok = false break end
          end
          if ok then
            for _, tag in ipairs(counted) do per_tag_count[tag] = (per_tag_count[tag] or 0) + 1 end
          end
        end
      end
      if ok then
        local j = pos[n]
        out_items[#out_items + 1] = cand[n]
        out_scores[#out_scores + 1] = scores[j]
        out_reasons[#out_reasons + 1] = (reasons and reasons[j]) or cjson.null
        if from_filler then filled = filled + 1 end
      end
    end
  end

  local raw = redis.call('GET', keys[1])
  local found = raw ~= false
  if found then
    local doc = cjson.decode(raw)
    model, computed_at, event_ts, ingest_ts = doc['model'], doc['computed_at'], doc['event_ts'], doc['ingest_ts']
    take(doc, false)
  end
  for f = 6, #keys do
    if #out_items >= k then break end
    local filler = redis.call('GET', keys[f])
    if filler then
      local doc = cjson.decode(filler)
      if model == nil then model, computed_at = doc['model'], doc['computed_at'] end
      take(doc, true)
    end
  end
  return '{"items":' .. json_list(out_items) .. ',"scores":' .. json_list(out_scores)
    .. ',"reasons":' .. json_list(out_reasons)
    .. ',"model":' .. (model and cjson.encode(model) or 'null')
    .. ',"computed_at":' .. (computed_at and cjson.encode(computed_at) or 'null')
    .. ',"event_ts":' .. ((event_ts and event_ts ~= cjson.null) and cjson.encode(event_ts) or 'null')
    .. ',"ingest_ts":' .. ((ingest_ts and ingest_ts ~= cjson.null) and cjson.encode(ingest_ts) or 'null')
    .. ',"fallback":' .. tostring(not found) .. ',"filled":' .. filled .. '}'
end

redis.register_function{function_name = 'streamrec_read', callback = read, flags = {'no-writes'}}
"""


@dataclass(frozen=True)
class ReadCall:
    """The keys and arguments of one ``streamrec_read`` call (see the module docstring).

    ``keys`` are the five fixed keys (list, hidden, tags, not-interested,
    excluded), all with the same hash tag; ``fillers`` follow them.
    """

    keys: Sequence[str]
    fillers: Sequence[str] = ()
    k: int = 20
    per_category: int = 0
    categories: Sequence[str] = ()
    leave_out: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.keys) != 5:
            raise ValueError(
                f"a read names 5 fixed keys (list, hidden, tags, not-interested, excluded), got {len(self.keys)}"
            )
        if self.k < 0 or self.per_category < 0:
            raise ValueError(f"k and per_category must be >= 0, got k={self.k}, per_category={self.per_category}")

    def arguments(self) -> list[str | int]:
        """``numkeys``, the keys, then the arguments, as ``FCALL``/``FCALL_RO`` takes them after the name."""
        keys = [*self.keys, *self.fillers]
        return [
            len(keys),
            *keys,
            self.k,
            self.per_category,
            len(self.categories),
            *self.categories,
            *self.leave_out,
        ]

    def command(self, read_only: bool = True) -> list[str]:
        """The whole command, as a ``redis-cli`` line would spell it."""
        return ["FCALL_RO" if read_only else "FCALL", FUNCTION_NAME, *[str(a) for a in self.arguments()]]


def load_library(client: Any) -> None:
    """Load (or replace) the library on ``client``'s server; a cluster client loads it on every node."""
    client.function_load(READ_LIBRARY, replace=True)


def is_missing_function(error: BaseException) -> bool:
    """Whether ``error`` says the server does not have the function (a new or restarted Redis)."""
    return "function not found" in str(error).lower()

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
        {prefix}:tags:{NN}                  hash: item -> tags joined by \x1f, for items whose tags changed
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

__all__ = [
    "FUNCTION_NAME",
    "HIDE_FUNCTION",
    "LIBRARY_NAME",
    "READ_LIBRARY",
    "ReadCall",
    "is_missing_function",
    "load_library",
]

LIBRARY_NAME = "streamrec"
FUNCTION_NAME = "streamrec_read"
#: The worker's versioned write of availability (the same library; see its Lua comment).
HIDE_FUNCTION = "streamrec_hide"

#: The Lua library (Redis 7 Functions). Loaded with ``FUNCTION LOAD REPLACE``.
READ_LIBRARY = r"""#!lua name=streamrec
-- streamrec: the read step every served list passes through (see streamrec/serving/read_step.py).

local EMPTY = '{"items":[],"scores":[],"reasons":[],'

-- an item's tags, stored joined by the unit separator (\31)
local function split(joined)
  local out = {}
  if joined and joined ~= cjson.null then
    for tag in string.gmatch(joined, '[^\31]+') do out[#out + 1] = tag end
  end
  return out
end

local function read(keys, args)
  local k = tonumber(args[1])
  local per_tag = tonumber(args[2])
  local ncat = tonumber(args[3])
  if k == nil or per_tag == nil or ncat == nil or k < 0 or ncat < 0 then
    return redis.error_reply('streamrec_read: arguments are <k> <m> <number of categories> ...')
  end
  local wanted, framed_wanted = nil, nil
  if ncat > 0 then
    wanted, framed_wanted = {}, {}
    for i = 1, ncat do
      wanted[i] = args[3 + i]
      framed_wanted[i] = '\31' .. args[3 + i] .. '\31'
    end
  end
  local skip = {}
  for i = 4 + ncat, #args do skip[args[i]] = true end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local by_tags = wanted ~= nil or per_tag > 0
  local any_changed = by_tags and redis.call('HLEN', keys[3]) > 0
  local user_sets = redis.call('EXISTS', keys[4], keys[5]) > 0 -- most users exclude nothing
  local none = {}

  local out_items, out_scores, out_reasons = {}, {}, {}
  local per_tag_count = {}
  local filled = 0

  -- one stored document's items, filtered into the answer, a window at a time: a window holds a few more
  -- items than are missing (four times more with categories, where most fail), so a full answer stops early
  local function take(doc, from_filler)
    local items, scores, reasons, tags = doc['items'] or {}, doc['scores'] or {}, doc['reasons'], doc['tags']
    local j = 1
    while j <= #items and #out_items < k do
      local span = (k - #out_items) + 8
      if wanted then span = span * 4 end
      local stop = math.min(#items, j + span - 1)
      local cand, pos, cand_tags = {}, {}, {}
      for p = j, stop do
        local item = items[p]
        if not skip[item] then
          skip[item] = true -- each item at most once, from the first list that holds it
          cand[#cand + 1] = item
          pos[#pos + 1] = p
        end
      end
      j = stop + 1
      if by_tags and #cand > 0 then -- tags first (changed tags win): off-category items need no look-up
        local changed = any_changed and redis.call('HMGET', keys[3], unpack(cand)) or none
        local kept, kept_pos = {}, {}
        for n = 1, #cand do
          local joined = changed[n]
          if not joined then
            joined = tags and tags[pos[n]]
            if joined == nil or joined == cjson.null then joined = '' end
          end
          local ok = true
          if wanted then -- a plain search of each wanted category in the joined tags, whole tags only
            ok = false
            for i = 1, #wanted do
              if joined == wanted[i] or (string.find(joined, wanted[i], 1, true)
                  and string.find('\31' .. joined .. '\31', framed_wanted[i], 1, true)) then
                ok = true
                break
              end
            end
          end
          if ok then
            kept[#kept + 1] = cand[n]
            kept_pos[#kept_pos + 1] = pos[n]
            cand_tags[#kept] = joined
          end
        end
        cand, pos = kept, kept_pos
      end
      if #cand > 0 then
        local hidden = redis.call('HMGET', keys[2], unpack(cand))
        local refused, excluded = none, none
        if user_sets then
          refused = redis.call('SMISMEMBER', keys[4], unpack(cand))
          excluded = redis.call('SMISMEMBER', keys[5], unpack(cand))
        end
        for n = 1, #cand do
          if #out_items >= k then return end
          local ok = refused[n] ~= 1 and excluded[n] ~= 1
          if ok and hidden[n] then ok = now < tonumber(hidden[n]) end
          if ok and per_tag > 0 then
            local counted = split(cand_tags[n])
            if #counted == 0 then counted = {''} end
            for _, tag in ipairs(counted) do
              if (per_tag_count[tag] or 0) >= per_tag then ok = false break end
            end
            if ok then
              for _, tag in ipairs(counted) do per_tag_count[tag] = (per_tag_count[tag] or 0) + 1 end
            end
          end
          if ok then
            local at = pos[n]
            out_items[#out_items + 1] = cand[n]
            out_scores[#out_scores + 1] = scores[at]
            out_reasons[#out_reasons + 1] = (reasons and reasons[at]) or cjson.null
            if from_filler then filled = filled + 1 end
          end
        end
      end
    end
  end

  local head, head_raw = nil, nil -- the list's own document, else the first filler's: model and times
  local raw = redis.call('GET', keys[1])
  local found = raw ~= false
  if found then
    head, head_raw = cjson.decode(raw), raw
    take(head, false)
  end
  for f = 6, #keys do
    if #out_items >= k then break end
    local filler = redis.call('GET', keys[f])
    if filler then
      local doc = cjson.decode(filler)
      if head == nil then head, head_raw = doc, filler end
      take(doc, true)
    end
  end
  local reply = {model = head and head['model'] or cjson.null, fallback = not found, filled = filled}
  local text
  if #out_items == 0 then -- cjson writes an empty table as {}: the arrays are spelled out
    text = EMPTY .. string.sub(cjson.encode(reply), 2)
  else
    reply['items'], reply['scores'], reply['reasons'] = out_items, out_scores, out_reasons
    text = cjson.encode(reply)
  end
  -- times as the document spells them (cjson would round them to 14 digits: microseconds lost)
  local function stamp(name, from)
    local value = from and string.match(from, '"' .. name .. '":(-?[%d][%d%.eE+-]*)')
    return ',"' .. name .. '":' .. (value or 'null')
  end
  return string.sub(text, 1, -2) .. stamp('computed_at', head_raw) .. stamp('event_ts', found and raw)
    .. stamp('ingest_ts', found and raw) .. '}'
end

redis.register_function{function_name = 'streamrec_read', callback = read, flags = {'no-writes'}}

-- the worker's write of availability, per bucket: KEYS hidden:{NN}, hidden-version:{NN};
-- ARGV triples <item> <version: the catalogue event's offset, '' for none> <hidden from, '' to show>.
-- A versioned write older than the stored version is dropped, so workers that follow the
-- catalogue at different speeds (or replay it) never bring back an older state.
local function hide(keys, args)
  local applied = 0
  for i = 1, #args, 3 do
    local item, version, from = args[i], args[i + 1], args[i + 2]
    local ok = true
    if version ~= '' then
      local stored = redis.call('HGET', keys[2], item)
      ok = (not stored) or tonumber(version) > tonumber(stored)
      if ok then redis.call('HSET', keys[2], item, version) end
    else
      redis.call('HDEL', keys[2], item)
    end
    if ok then
      if from == '' then redis.call('HDEL', keys[1], item) else redis.call('HSET', keys[1], item, from) end
      applied = applied + 1
    end
  end
  return applied
end

redis.register_function{function_name = 'streamrec_hide', callback = hide}
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

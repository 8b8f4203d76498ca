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

    {"items": [...], "scores": [...], "reasons": [..., null], "model": "sasrec", "variant": null,
     "computed_at": 1763870000.1, "event_ts": 881250949.0, "ingest_ts": 1763869999.9,
     "fallback": false, "filled": 2}

``variant`` names the experiment's variant the list serves (``null`` outside an experiment and for
an answer from the fillers alone). ``fallback`` is true when the list itself is missing (the answer comes from
the fillers); ``filled`` counts the items taken from fillers. Scores and times
come back as the stored document spells them. A stored list holds at most a
few thousand items (Lua's stack bounds one ``HMGET``).

What a read costs Redis is counted, in instructions, by ``python -m bench.read_cost``
(deterministic, where timings on a shared machine are not): the step decodes
only the head of the arrays a read uses, so a read costs about as much as the
items it looks at, not the depth of the lists it touches.

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

-- What the step costs Redis (callgrind, Redis 7.0): a call from Lua into C ~1k instructions, a JSON
-- array element made a Lua value ~1k, a JSON number decoded ~1.3k and encoded ~4k, a whole 50-item
-- document decoded ~170k. So a read decodes only the arrays it uses (items; tags only for categories
-- or diversity; scores and reasons only of a document that gives an item to the answer), finds them
-- with a couple of C calls per field, and touches a window of items a little larger than what is missing.

-- an item's tags, stored joined by the unit separator (\31)
local function split(joined)
  local out = {}
  if joined and joined ~= cjson.null then
    for tag in string.gmatch(joined, '[^\31]+') do out[#out + 1] = tag end
  end
  return out
end

-- The top-level fields of a document as the worker writes it (compact JSON, one level): name -> first
-- and last byte of its value. nil for anything else (spaces, an escape in a string, a repeated field):
-- such a document is decoded whole instead, with the same result.
local function index_fields(raw)
  local find, match = string.find, string.match
  local first, last = {}, {}
  local lead, p, n = '^{"([^"\\]*)":()(.)', 1, #raw
  while true do
    local name, v, c = match(raw, lead, p)
    if not name then
      if p == n and string.byte(raw, p) == 125 then return first, last end -- the closing '}'
      return nil
    end
    if first[name] then return nil end
    local _, stop
    if c == '[' then -- up to the first ']' (one inside a string makes decoding the span fail: see array)
      stop = find(raw, ']', v, true)
    elseif c == '"' then -- a string without escapes
      _, stop = find(raw, '^"[^"\\]*"', v)
    else -- a number, true, false or null
      _, stop = find(raw, '^[^,}%]"]+', v)
    end
    if not stop then return nil end
    first[name], last[name] = v, stop
    lead, p = '^,"([^"\\]*)":()(.)', stop + 1
  end
end

local function open_doc(raw)
  local first, last = index_fields(raw)
  return {raw = raw, first = first, last = last, arrays = {}, parts = {}}
end

local function whole(doc)
  if not doc.decoded then
    doc.decoded = cjson.decode(doc.raw)
    doc.first, doc.last = nil, nil
  end
  return doc.decoded
end

-- the field `name` of the whole document (nil for null or missing)
local function field_of(doc, name)
  local value = whole(doc)[name]
  if value == cjson.null then return nil end
  return value
end

-- the array field `name` (nil when the document has none, or null)
local function array(doc, name)
  local got = doc.arrays[name]
  if got ~= nil then return got or nil end
  local first = doc.first
  if first then
    local v = first[name]
    if v == nil then
      got = nil -- no such field
    else
      local raw = doc.raw
      local c = string.byte(raw, v)
      if c == 91 then -- '['
        local ok, value = pcall(cjson.decode, string.sub(raw, v, doc.last[name]))
        if ok then got = value else got = field_of(doc, name) end
      elseif c == 110 and string.sub(raw, v, doc.last[name]) == 'null' then
        got = nil
      else
        got = field_of(doc, name)
      end
    end
  else
    got = field_of(doc, name)
  end
  doc.arrays[name] = got or false
  return got
end

-- Patterns of one array element, for cutting an array after its first elements.
local STRING, NUMBER_OR_NULL = '"[^"]*"', '[^,%]"]+'

-- The text of the array field `name` up to its m-th element (without the closing ']'), when the array
-- has more than m elements and the document no escape (a string then holds no '"'); nil otherwise. One
-- pattern of m elements, matched in C: a window decodes the head of a deep list, not all of it.
local function cut(doc, name, m, element)
  local v = doc.first and doc.first[name]
  if not v or m < 1 or m > 100 or string.byte(doc.raw, v) ~= 91 then return nil end
  if doc.plain == nil then doc.plain = not string.find(doc.raw, '\\', 1, true) end
  if not doc.plain then return nil end
  local _, e = string.find(doc.raw, '^%[' .. string.rep(element .. ',', m), v)
  if not e or e >= doc.last[name] then return nil end
  return string.sub(doc.raw, v, e - 1)
end

-- At least the first m elements of the array field `name` (all of them when it is shorter), and whether
-- that is the whole array.
local function head_of(doc, name, m)
  local all = doc.arrays[name]
  if all ~= nil then return all or nil, true end
  local part = doc.parts[name]
  if part and part.n >= m then return part.values, false end
  local text = cut(doc, name, m, STRING)
  if text then
    local ok, values = pcall(cjson.decode, text .. ']')
    if ok and #values == m then
      doc.parts[name] = {n = m, values = values}
      return values, false
    end
  end
  return array(doc, name), true
end

-- the scores of a document as their JSON texts, which pass through to the answer as written (decoding
-- a number and encoding it again costs some 5k instructions, and rounds it to 14 digits)
local function score_texts(doc, m)
  local v = doc.first and doc.first['scores']
  if v and string.byte(doc.raw, v) == 91 then -- '[' numbers and nulls: split at the commas, in C
    local text = cut(doc, 'scores', m, NUMBER_OR_NULL) or string.sub(doc.raw, v, doc.last['scores'] - 1)
    local inner = string.sub(text, 2)
    if inner == '' then return {} end
    if not string.find(inner, '"', 1, true) then
      local ok, texts = pcall(cjson.decode, '["' .. string.gsub(inner, ',', '","') .. '"]')
      if ok then return texts end
    end
  end
  local texts = {}
  for i, score in ipairs(array(doc, 'scores') or {}) do texts[i] = cjson.encode(score) end
  return texts
end

-- the document's string field `name`, JSON-encoded ('null' when it has none)
local function string_json(doc, name)
  if doc.first then
    local v = doc.first[name]
    if v == nil then return 'null' end
    if string.byte(doc.raw, v) == 34 then return string.sub(doc.raw, v, doc.last[name]) end
  end
  local value = field_of(doc, name)
  if value == nil then return 'null' end
  return cjson.encode(value)
end

-- a time as the document spells it (cjson would round it to 14 digits: microseconds lost): the number
-- after the first `"name":` that has one, as string.match(raw, '"name":(-?[%d][%d%.eE+-]*)') finds it
local NUMBER = '^-?[%d][%d%.eE+-]*'
local function stamp(name, doc)
  local value = nil
  if doc then
    local raw = doc.raw
    if doc.first then -- each field once: its value or nothing
      local v = doc.first[name]
      value = v and string.match(raw, NUMBER, v)
    else -- decoded whole: searched as written
      local key = '"' .. name .. '":'
      local from = 1
      while true do
        local at = string.find(raw, key, from, true)
        if not at then break end
        value = string.match(raw, NUMBER, at + #key)
        if value then break end
        from = at + 1
      end
    end
  end
  return ',"' .. name .. '":' .. (value or 'null')
end

local function read(keys, args)
  local call, find, tonumber = redis.call, string.find, tonumber
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
  local now = nil -- the server's clock (TIME), asked only when an item is hidden from a time on
  local by_tags = wanted ~= nil or per_tag > 0
  local any_changed = by_tags and call('HLEN', keys[3]) > 0
  local user_sets = call('EXISTS', keys[4], keys[5]) > 0 -- most users exclude nothing
  local none = {}

  local out_items, out_scores, out_reasons = {}, {}, {}
  local nout = 0
  local per_tag_count = {}
  local matches = {} -- joined tags -> whether they hold a wanted category (many items share their tags)
  local null = cjson.null

  -- a plain search of each wanted category in the joined tags, whole tags only
  local function holds_wanted(joined)
    local ok = false
    for i = 1, ncat do
      if joined == wanted[i] or (find(joined, wanted[i], 1, true)
          and find('\31' .. joined .. '\31', framed_wanted[i], 1, true)) then
        ok = true
        break
      end
    end
    matches[joined] = ok
    return ok
  end
  local filled = 0

  -- one stored document's items, filtered into the answer, a window at a time: a window holds a few more
  -- items than are missing (four times more with categories, where most fail), so a full answer stops early
  local function take(doc, from_filler)
    local items, complete, tags = {}, false, nil -- the head of the list a window needs, then more
    local scores, reasons, known = nil, nil, 0 -- taken when an item of this document is served
    local j = 1
    while nout < k do
      local span = (k - nout) + 8
      if wanted then span = span * 4 end
      local stop = j + span - 1
      if stop > #items and not complete then
        items, complete = head_of(doc, 'items', stop)
        items = items or {}
        if by_tags then tags = head_of(doc, 'tags', stop) end
      end
      if stop > #items then stop = #items end
      if j > stop then break end
      local cand, pos, cand_tags, ncand = {}, {}, {}, 0
      if by_tags and not any_changed then -- the tags written with the list decide: one pass, which
        local need, p = (k - nout) + 8, j -- stops once it holds as many candidates as a window without categories
        while p <= stop and ncand < need do
          local item = items[p]
          p = p + 1
          if not skip[item] then
            skip[item] = true -- each item at most once, from the first list that holds it
            local joined = tags and tags[p - 1]
            if joined == nil or joined == null then joined = '' end
            local ok = true
            if wanted then
              ok = matches[joined]
              if ok == nil then ok = holds_wanted(joined) end
            end
            if ok then
              ncand = ncand + 1
              cand[ncand], pos[ncand], cand_tags[ncand] = item, p - 1, joined
            end
          end
        end
        j = p
      else
        for p = j, stop do
          local item = items[p]
          if not skip[item] then
            skip[item] = true
            ncand = ncand + 1
            cand[ncand], pos[ncand] = item, p
          end
        end
        if by_tags and ncand > 0 then -- tags first (changed tags win): off-category items need no look-up
          local changed = call('HMGET', keys[3], unpack(cand))
          local kept, kept_pos, nkept = {}, {}, 0
          for n = 1, ncand do
            local joined = changed[n]
            if not joined then
              joined = tags and tags[pos[n]]
              if joined == nil or joined == null then joined = '' end
            end
            local ok = true
            if wanted then
              ok = matches[joined]
              if ok == nil then ok = holds_wanted(joined) end
            end
            if ok then
              nkept = nkept + 1
              kept[nkept], kept_pos[nkept], cand_tags[nkept] = cand[n], pos[n], joined
            end
          end
          cand, pos, ncand = kept, kept_pos, nkept
        end
        j = stop + 1
      end
      if ncand > 0 then
        local hidden = call('HMGET', keys[2], unpack(cand))
        local refused, excluded = none, none
        if user_sets then
          refused = call('SMISMEMBER', keys[4], unpack(cand))
          excluded = call('SMISMEMBER', keys[5], unpack(cand))
        end
        for n = 1, ncand do
          if nout >= k then return end
          local ok = refused[n] ~= 1 and excluded[n] ~= 1
          if ok and hidden[n] then
            local from = tonumber(hidden[n])
            if from > 0 and now == nil then -- hidden from 0: hidden whatever the time
              local t = call('TIME')
              now = tonumber(t[1]) + tonumber(t[2]) / 1000000
            end
            ok = from > 0 and now < from
          end
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
            if at > known then -- the scores and reasons of this window's items
              scores, reasons, known = score_texts(doc, stop), head_of(doc, 'reasons', stop), stop
            end
            nout = nout + 1
            out_items[nout], out_scores[nout] = cand[n], scores[at] or 'null'
            out_reasons[nout] = (reasons and reasons[at]) or null
            if from_filler then filled = filled + 1 end
          end
        end
      end
    end
  end

  local head = nil -- the list's own document, else the first filler's: model and times
  local raw = call('GET', keys[1])
  local found = raw ~= false
  if found then
    head = open_doc(raw)
    take(head, false)
  end
  for f = 6, #keys do
    if nout >= k then break end
    local filler = call('GET', keys[f])
    if filler then
      local doc = open_doc(filler)
      if head == nil then head = doc end
      take(doc, true)
    end
  end
  local text
  if nout == 0 then -- cjson writes an empty table as {}: the arrays are spelled out
    text = EMPTY
  else
    text = '{"items":' .. cjson.encode(out_items) .. ',"scores":[' .. table.concat(out_scores, ',')
      .. '],"reasons":' .. cjson.encode(out_reasons) .. ','
  end
  local variant = found and string_json(head, 'variant') or 'null' -- an experiment's variant (the list's own)
  return text .. '"model":' .. (head and string_json(head, 'model') or 'null') .. ',"variant":' .. variant
    .. ',"fallback":' .. tostring(not found)
    .. ',"filled":' .. filled .. stamp('computed_at', head) .. stamp('event_ts', found and head)
    .. stamp('ingest_ts', found and head) .. '}'
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

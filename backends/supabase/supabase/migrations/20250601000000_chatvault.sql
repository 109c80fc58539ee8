-- chatvault on Supabase: sealed chat records, a per-user change feed that
-- commits in order, and the vault's key file. Applied by `supabase db push`
-- (or any migration runner, in file-name order) as the project's owner role.
--
-- What the server sees: ids, versions, sizes, timestamps and ciphertext.
-- There is no plaintext column anywhere.
--
-- Access model. Every function is SECURITY INVOKER, so row-level security
-- is the one access check: the caller's JWT `sub` (auth.uid()) selects the
-- rows, and a function bug cannot reach another user's rows. Because the
-- `authenticated` role therefore holds table privileges (and could also
-- reach the tables through PostgREST's table endpoints), the invariants the
-- change feed depends on live in a trigger on the table, not only inside the
-- RPCs: every write of a record takes its user's head row lock and gets the
-- next sequence number, versions only grow, and sizes are bounded. `anon`
-- gets nothing: Supabase grants new objects in `public` to anon and
-- authenticated by default, so those grants are revoked explicitly below.
--
-- Byte transport. PostgREST renders bytea as hex text ("\x…", twice the
-- size); these functions exchange sealed bytes as standard base64 text
-- without line breaks instead (encode/decode in SQL), a third smaller.
--
-- Change feed. `chatvault_changes` is an append-only log with one entry per
-- committed record version (its summary inline, so the sidebar needs no
-- second request); `chatvault_records` holds each chat's current record.
-- Entries superseded by a later version of their chat are pruned after
-- chatvault_history_retention(), so the log stays bounded by the number of
-- chats plus recent history, and a reader whose cursor is older than that
-- still meets every chat's latest version.
--
-- Paging. Supabase caps set-returning responses at the project's max rows
-- (1,000 by default). The RPCs return one jsonb value, which that cap does
-- not cut, and page explicitly: a page says whether more changes follow
-- (`more`) and which requested ids were deferred to a later request
-- (`deferred`), so a client never has to infer anything from absence.

-- The largest sealed record (summary + body), in bytes. The client reports
-- the same number as its capability; change both together.
create function public.chatvault_max_record_bytes() returns bigint
language sql immutable parallel safe set search_path = ''
as $$ select 2097152::bigint $$;

-- The largest key file, in bytes.
create function public.chatvault_max_keyring_bytes() returns bigint
language sql immutable parallel safe set search_path = ''
as $$ select 1048576::bigint $$;

-- Bytes of sealed data one response carries at most (summaries and bodies;
-- base64 adds a third). At least one record is always returned.
create function public.chatvault_page_bytes() returns bigint
language sql immutable parallel safe set search_path = ''
as $$ select 8388608::bigint $$;

-- How long a change-log entry superseded by a later version of its chat
-- is kept, so that readers polling within that time see every commit.
create function public.chatvault_history_retention() returns interval
language sql immutable parallel safe set search_path = ''
as $$ select interval '30 days' $$;

-- One row per user: the next sequence number of that user's change feed.
-- Writers of one user serialize on this row (its lock is held until
-- commit), so that user's commits receive sequence numbers in commit order
-- and a reader paging by `seq > cursor` can never see N+1 while N is still
-- in flight. Writers of different users never touch the same row.
create table public.chatvault_heads (
  owner uuid primary key default auth.uid(),
  next_seq bigint not null default 1 check (next_seq >= 1),
  updated_at timestamptz not null default now()
);

-- One row per chat: its current sealed record (a tombstone once deleted).
-- `seq` is the feed position of the commit that wrote the row; rewriting a
-- chat moves it forward, so a reader always meets a chat's latest commit
-- after its cursor.
create table public.chatvault_records (
  owner uuid not null default auth.uid(),
  chat uuid not null,
  version bigint not null check (version >= 0),
  deleted boolean not null default false,
  summary bytea not null,
  body bytea,
  summary_bytes integer generated always as (octet_length(summary)) stored,
  body_bytes integer generated always as (coalesce(octet_length(body), 0)) stored,
  seq bigint not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (owner, chat),
  constraint chatvault_records_tombstone_has_no_body check (not deleted or body is null)
);

create unique index chatvault_records_feed on public.chatvault_records (owner, seq);

-- One entry per committed record version, in commit order per user.
create table public.chatvault_changes (
  owner uuid not null default auth.uid(),
  seq bigint not null,
  chat uuid not null,
  version bigint not null,
  deleted boolean not null,
  summary bytea not null,
  created_at timestamptz not null default now(),
  primary key (owner, seq)
);

create index chatvault_changes_by_chat on public.chatvault_changes (owner, chat, seq);

-- The vault's key file (an age file encrypted to passphrase or devices).
create table public.chatvault_keyrings (
  owner uuid primary key default auth.uid(),
  version bigint not null check (version >= 1),
  bytes bytea not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- Every write of a record, through the RPCs or straight through the table
-- endpoint, gets its sequence number here, under its user's head row lock,
-- and its entry in the change log.
create function public.chatvault_records_stamp() returns trigger
language plpgsql security invoker set search_path = ''
as $$
declare
  record_bytes bigint := octet_length(new.summary) + coalesce(octet_length(new.body), 0);
begin
  if record_bytes > public.chatvault_max_record_bytes() then
    raise sqlstate 'PT413' using
      message = 'chatvault record too large',
      detail = json_build_object('size', record_bytes, 'limit', public.chatvault_max_record_bytes())::text,
      hint = 'Split the chat or raise chatvault_max_record_bytes() and the client limit together.';
  end if;
  if tg_op = 'UPDATE' then
    if new.owner is distinct from old.owner or new.chat is distinct from old.chat then
      raise sqlstate '42501' using message = 'chatvault records cannot change owner or chat';
    end if;
    if new.version <= old.version then
      raise sqlstate 'PT409' using
        message = 'chatvault version must increase',
        detail = json_build_object('current', old.version)::text;
    end if;
    new.created_at := old.created_at;
  end if;
  insert into public.chatvault_heads as h (owner, next_seq)
    values (new.owner, 2)
    on conflict (owner) do update set next_seq = h.next_seq + 1, updated_at = now()
    returning h.next_seq - 1 into new.seq;
  new.updated_at := now();
  insert into public.chatvault_changes (owner, seq, chat, version, deleted, summary)
    values (new.owner, new.seq, new.chat, new.version, new.deleted, new.summary);
  if tg_op = 'UPDATE' then
    delete from public.chatvault_changes c
      where c.owner = new.owner and c.chat = new.chat and c.seq < new.seq
        and c.created_at < now() - public.chatvault_history_retention();
  end if;
  return new;
end
$$;

create trigger chatvault_records_stamp
  before insert or update on public.chatvault_records
  for each row execute function public.chatvault_records_stamp();

-- Row-level security: a user reaches only rows whose owner is their JWT sub.
alter table public.chatvault_heads enable row level security;
alter table public.chatvault_records enable row level security;
alter table public.chatvault_keyrings enable row level security;
alter table public.chatvault_changes enable row level security;

create policy chatvault_heads_own_select on public.chatvault_heads
  for select to authenticated using (owner = (select auth.uid()));
create policy chatvault_heads_own_insert on public.chatvault_heads
  for insert to authenticated with check (owner = (select auth.uid()));
create policy chatvault_heads_own_update on public.chatvault_heads
  for update to authenticated
  using (owner = (select auth.uid())) with check (owner = (select auth.uid()));

create policy chatvault_records_own_select on public.chatvault_records
  for select to authenticated using (owner = (select auth.uid()));
create policy chatvault_records_own_insert on public.chatvault_records
  for insert to authenticated with check (owner = (select auth.uid()));
create policy chatvault_records_own_update on public.chatvault_records
  for update to authenticated
  using (owner = (select auth.uid())) with check (owner = (select auth.uid()));

create policy chatvault_changes_own_select on public.chatvault_changes
  for select to authenticated using (owner = (select auth.uid()));
create policy chatvault_changes_own_insert on public.chatvault_changes
  for insert to authenticated with check (owner = (select auth.uid()));
create policy chatvault_changes_own_delete on public.chatvault_changes
  for delete to authenticated using (owner = (select auth.uid()));

create policy chatvault_keyrings_own_select on public.chatvault_keyrings
  for select to authenticated using (owner = (select auth.uid()));
create policy chatvault_keyrings_own_insert on public.chatvault_keyrings
  for insert to authenticated with check (owner = (select auth.uid()));
create policy chatvault_keyrings_own_update on public.chatvault_keyrings
  for update to authenticated
  using (owner = (select auth.uid())) with check (owner = (select auth.uid()));

-- Changes committed after `since`, in commit order: at most `lim` (capped
-- at 1,000) and at most chatvault_page_bytes() of sealed data, summaries
-- inline. With `with_bodies`, an entry that is its chat's current version
-- carries the body too (older entries have none). `cursor` is where the
-- next call continues; `more` says whether further changes were already
-- committed.
create function public.chatvault_pull(since bigint default 0, lim integer default 1000, with_bodies boolean default false)
returns jsonb
language sql stable security invoker set search_path = ''
as $$
  with page as (
    select c.seq, c.chat, c.version, c.deleted, c.summary,
           case when with_bodies then (
             select r.body from public.chatvault_records r
             where r.owner = c.owner and r.chat = c.chat and r.version = c.version
           ) end as body
    from public.chatvault_changes c
    where c.owner = (select auth.uid()) and c.seq > greatest(since, 0)
    order by c.seq
    limit least(greatest(lim, 1), 1000) + 1
  ),
  sized as (
    select p.*,
           row_number() over (order by p.seq) as n,
           sum(octet_length(p.summary) + coalesce(octet_length(p.body), 0)) over (order by p.seq) as running
    from page p
  ),
  kept as (
    select * from sized
    where n <= least(greatest(lim, 1), 1000)
      and (n = 1 or running <= public.chatvault_page_bytes())
  )
  select jsonb_build_object(
    'changes', coalesce(
      (select jsonb_agg(jsonb_build_object(
          'seq', k.seq,
          'chat', k.chat,
          'version', k.version,
          'deleted', k.deleted,
          'summary', translate(encode(k.summary, 'base64'), E'\n', ''),
          'body', translate(encode(k.body, 'base64'), E'\n', '')
        ) order by k.seq) from kept k),
      '[]'::jsonb),
    'cursor', coalesce((select max(k.seq) from kept k), greatest(since, 0)),
    'more', (select count(*) from page) > (select count(*) from kept)
  )
$$;

-- The current records of `ids` that exist (tombstones included), bodies
-- only when asked. Ids beyond the response's byte budget are listed in
-- `deferred` for another call; ids with no record appear in neither list.
create function public.chatvault_get(ids uuid[], with_bodies boolean default false)
returns jsonb
language sql stable security invoker set search_path = ''
as $$
  with hits as (
    select r.chat, r.version, r.deleted, r.summary,
           case when with_bodies then r.body end as body
    from public.chatvault_records r
    where r.owner = (select auth.uid()) and r.chat = any(ids)
  ),
  sized as (
    select h.*,
           row_number() over (order by h.chat) as n,
           sum(octet_length(h.summary) + coalesce(octet_length(h.body), 0)) over (order by h.chat) as running
    from hits h
  )
  select jsonb_build_object(
    'records', coalesce(
      (select jsonb_agg(jsonb_build_object(
          'chat', s.chat,
          'version', s.version,
          'deleted', s.deleted,
          'summary', translate(encode(s.summary, 'base64'), E'\n', ''),
          'body', translate(encode(s.body, 'base64'), E'\n', '')
        ) order by s.chat)
       from sized s where s.n = 1 or s.running <= public.chatvault_page_bytes()),
      '[]'::jsonb),
    'deferred', coalesce(
      (select jsonb_agg(s.chat order by s.chat)
       from sized s where not (s.n = 1 or s.running <= public.chatvault_page_bytes())),
      '[]'::jsonb)
  )
$$;

-- Commits records in one transaction, each under its own precondition:
--   {"chat": uuid, "version": n, "deleted": bool, "summary": base64,
--    "body": base64 | null, "pre": "none" | "absent" | "version",
--    "expected": n | null}
-- Returns one result per record, in order: {"ok": true, "seq": n} or
-- {"ok": false, "current": n | null} for a precondition that did not hold
-- (nothing is written for that record). A version not above the stored one
-- is a conflict whatever the precondition.
create function public.chatvault_push(records jsonb)
returns jsonb
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
  item record;
  cur bigint;
  written bigint;
  results jsonb := '[]'::jsonb;
begin
  if uid is null then
    raise sqlstate '42501' using message = 'chatvault_push needs a signed-in user (auth.uid() is null)';
  end if;
  if jsonb_typeof(records) is distinct from 'array' then
    raise sqlstate '22023' using message = 'chatvault_push expects a JSON array of records';
  end if;
  -- Take this user's head row lock before reading anything: from here on no
  -- other writer of this user commits, and every statement below sees all
  -- of this user's earlier commits, so the preconditions are exact.
  insert into public.chatvault_heads as h (owner, next_seq)
    values (uid, 1)
    on conflict (owner) do update set next_seq = h.next_seq;

  for item in
    select (e.value ->> 'chat')::uuid as chat,
           (e.value ->> 'version')::bigint as version,
           coalesce((e.value ->> 'deleted')::boolean, false) as deleted,
           decode(e.value ->> 'summary', 'base64') as summary,
           decode(e.value ->> 'body', 'base64') as body,
           coalesce(e.value ->> 'pre', 'none') as pre,
           (e.value ->> 'expected')::bigint as expected
    from jsonb_array_elements(records) with ordinality as e(value, idx)
    order by e.idx
  loop
    if item.pre not in ('none', 'absent', 'version') then
      raise sqlstate '22023' using message = format('unknown precondition %L', item.pre);
    end if;
    cur := null;
    select r.version into cur
      from public.chatvault_records r
      where r.owner = uid and r.chat = item.chat
      for update;
    if (item.pre = 'absent' and cur is not null)
       or (item.pre = 'version' and cur is distinct from item.expected)
       or (cur is not null and item.version <= cur) then
      results := results || jsonb_build_array(jsonb_build_object('ok', false, 'current', cur));
      continue;
    end if;
    if cur is null then
      insert into public.chatvault_records (owner, chat, version, deleted, summary, body, seq)
        values (uid, item.chat, item.version, item.deleted, item.summary, item.body, 0)
        returning seq into written;
    else
      update public.chatvault_records r
        set version = item.version, deleted = item.deleted,
            summary = item.summary, body = item.body
        where r.owner = uid and r.chat = item.chat
        returning r.seq into written;
    end if;
    results := results || jsonb_build_array(jsonb_build_object('ok', true, 'seq', written));
  end loop;
  return results;
end
$$;

-- The vault's key file, or null if none was stored yet.
create function public.chatvault_keyring_get()
returns jsonb
language sql stable security invoker set search_path = ''
as $$
  select jsonb_build_object(
    'version', k.version,
    'bytes', translate(encode(k.bytes, 'base64'), E'\n', ''))
  from public.chatvault_keyrings k
  where k.owner = (select auth.uid())
$$;

-- Stores the key file (base64) if `pre` holds ("none", "absent", or
-- "version" with `expected`). Returns {"ok": true, "version": n} or
-- {"ok": false, "current": n | null}.
create function public.chatvault_keyring_put(keyring text, pre text default 'none', expected bigint default null)
returns jsonb
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
  sealed bytea := decode(keyring, 'base64');
  cur bigint;
begin
  if uid is null then
    raise sqlstate '42501' using message = 'chatvault_keyring_put needs a signed-in user (auth.uid() is null)';
  end if;
  if pre not in ('none', 'absent', 'version') then
    raise sqlstate '22023' using message = format('unknown precondition %L', pre);
  end if;
  if octet_length(sealed) > public.chatvault_max_keyring_bytes() then
    raise sqlstate 'PT413' using
      message = 'chatvault key file too large',
      detail = json_build_object('size', octet_length(sealed), 'limit', public.chatvault_max_keyring_bytes())::text;
  end if;
  -- Same lock as chatvault_push: concurrent key file writers of one user
  -- take turns, so the precondition below is exact.
  insert into public.chatvault_heads as h (owner, next_seq)
    values (uid, 1)
    on conflict (owner) do update set next_seq = h.next_seq;
  select k.version into cur from public.chatvault_keyrings k where k.owner = uid for update;
  if (pre = 'absent' and cur is not null) or (pre = 'version' and cur is distinct from expected) then
    return jsonb_build_object('ok', false, 'current', cur);
  end if;
  if cur is null then
    insert into public.chatvault_keyrings (owner, version, bytes) values (uid, 1, sealed);
    return jsonb_build_object('ok', true, 'version', 1);
  end if;
  update public.chatvault_keyrings k
    set version = cur + 1, bytes = sealed, updated_at = now()
    where k.owner = uid;
  return jsonb_build_object('ok', true, 'version', cur + 1);
end
$$;

-- Privileges: the signed-in user's role only. Supabase's default privileges
-- grant everything new in `public` to anon and authenticated, and Postgres
-- grants EXECUTE on functions to PUBLIC, so both are taken back first.
revoke all on table public.chatvault_heads, public.chatvault_records, public.chatvault_changes, public.chatvault_keyrings
  from public, anon, authenticated;
grant select, insert, update on table public.chatvault_heads, public.chatvault_records, public.chatvault_keyrings
  to authenticated;
grant select, insert, delete on table public.chatvault_changes to authenticated;

revoke all on function
  public.chatvault_max_record_bytes(),
  public.chatvault_max_keyring_bytes(),
  public.chatvault_page_bytes(),
  public.chatvault_history_retention(),
  public.chatvault_records_stamp(),
  public.chatvault_pull(bigint, integer, boolean),
  public.chatvault_get(uuid[], boolean),
  public.chatvault_push(jsonb),
  public.chatvault_keyring_get(),
  public.chatvault_keyring_put(text, text, bigint)
  from public, anon, authenticated;
grant execute on function
  public.chatvault_max_record_bytes(),
  public.chatvault_max_keyring_bytes(),
  public.chatvault_page_bytes(),
  public.chatvault_history_retention(),
  public.chatvault_pull(bigint, integer, boolean),
  public.chatvault_get(uuid[], boolean),
  public.chatvault_push(jsonb),
  public.chatvault_keyring_get(),
  public.chatvault_keyring_put(text, text, bigint)
  to authenticated;

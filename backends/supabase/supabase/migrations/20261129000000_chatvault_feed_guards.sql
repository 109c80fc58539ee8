-- chatvault on Supabase, second migration: guards for the change feed.
--
-- One write path. The first migration made every function SECURITY INVOKER
-- and so had to grant `authenticated` INSERT/UPDATE/DELETE on the tables,
-- which PostgREST also serves as table endpoints: anyone holding a user's
-- token could reset that user's head sequence (pushes then loop on
-- unique-key conflicts), delete log entries (other devices miss commits)
-- or write records and key files of any size. Now the RPCs are SECURITY
-- DEFINER (owned by the migration's role, `search_path = ''`, every name
-- schema-qualified, every row selected by `auth.uid()` explicitly), and
-- `authenticated` keeps only SELECT on the tables, under row-level
-- security, so reads through the table endpoints show a user their own
-- rows and writes are refused. Size limits hold on every path: records in
-- the stamping trigger, and CHECK constraints on log entries and key files.
--
-- Restores. `chatvault_pull` also returns `head`, the user's last assigned
-- sequence number. A device whose cursor is beyond it (the database was
-- restored to a point before commits the device had already read) restarts
-- its feed from the beginning instead of waiting, commit numbers being
-- handed out again, past commits it would never see.

create or replace function public.chatvault_pull(since bigint default 0, lim integer default 1000, with_bodies boolean default false)
returns jsonb
language sql stable security definer set search_path = ''
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
    'more', (select count(*) from page) > (select count(*) from kept),
    'head', coalesce(
      (select h.next_seq - 1 from public.chatvault_heads h where h.owner = (select auth.uid())),
      0)
  )
$$;

alter function public.chatvault_get(uuid[], boolean) security definer;
alter function public.chatvault_push(jsonb) security definer;
alter function public.chatvault_keyring_get() security definer;
alter function public.chatvault_keyring_put(text, text, bigint) security definer;

-- CREATE OR REPLACE keeps the grants of chatvault_pull; restate them anyway
-- so this file reads whole.
revoke all on function public.chatvault_pull(bigint, integer, boolean) from public, anon;
grant execute on function public.chatvault_pull(bigint, integer, boolean) to authenticated;

revoke insert, update, delete, truncate, references, trigger
  on table public.chatvault_heads, public.chatvault_records, public.chatvault_changes, public.chatvault_keyrings
  from public, anon, authenticated;
grant select
  on table public.chatvault_heads, public.chatvault_records, public.chatvault_changes, public.chatvault_keyrings
  to authenticated;

drop policy chatvault_heads_own_insert on public.chatvault_heads;
drop policy chatvault_heads_own_update on public.chatvault_heads;
drop policy chatvault_records_own_insert on public.chatvault_records;
drop policy chatvault_records_own_update on public.chatvault_records;
drop policy chatvault_changes_own_insert on public.chatvault_changes;
drop policy chatvault_changes_own_delete on public.chatvault_changes;
drop policy chatvault_keyrings_own_insert on public.chatvault_keyrings;
drop policy chatvault_keyrings_own_update on public.chatvault_keyrings;

alter table public.chatvault_changes
  add constraint chatvault_changes_summary_size
  check (octet_length(summary) <= public.chatvault_max_record_bytes());
alter table public.chatvault_keyrings
  add constraint chatvault_keyrings_size
  check (octet_length(bytes) <= public.chatvault_max_keyring_bytes());

-- chatvault on Supabase, fourth migration: a restore is detected however
-- many commits follow it.
--
-- The second migration restarts a device's feed when its cursor is beyond
-- the user's head (the database was restored to a point before commits the
-- device had read). Once enough commits follow the restore, the head passes
-- the old cursor again: the numbers between the restored head and the
-- cursor now belong to commits the device never saw, and it skipped them.
--
-- An epoch id kept in the database cannot tell: a point-in-time restore
-- brings back the epoch of that time along with everything else. What a
-- restore cannot bring back is time. Every commit now gets a commit stamp,
-- `committed_at`, taken under its user's head row lock and strictly
-- increasing along the user's sequence numbers (the later of the clock and
-- the previous stamp plus one microsecond; the previous stamp lives in the
-- head row). The cursor a device keeps carries the stamp of the commit it
-- read last (seq c, stamp t). In the same history every commit numbered up
-- to c was stamped at or before t. After a restore to a point before c,
-- the commits that reuse numbers up to c are stamped after the restore,
-- so after t: `chatvault_pull` looks at the last entry numbered up to c
-- (one index probe) and answers `diverged` when its stamp is later than t;
-- the device then restarts its feed from the beginning, as for a head
-- behind its cursor. If every reused number up to c was pruned since, each
-- of those chats has a later commit numbered after c, which the device
-- reads anyway: nothing is skipped. The one assumption is that the
-- database's clock does not go back, across the restore, by more than the
-- time between the device's read and the first commit after the restore.
--
-- Entries written before this migration have no stamp and are never
-- reported as diverged (the head check still covers them); cursors without
-- a stamp (older clients, older servers) work as before.

alter table public.chatvault_heads
  add column last_committed_at timestamptz;
alter table public.chatvault_changes
  add column committed_at timestamptz;

create or replace function public.chatvault_records_stamp() returns trigger
language plpgsql security invoker set search_path = ''
as $$
declare
  record_bytes bigint := octet_length(new.summary) + coalesce(octet_length(new.body), 0);
  stamp timestamptz;
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
  insert into public.chatvault_heads as h (owner, next_seq, last_committed_at)
    values (new.owner, 2, clock_timestamp())
    on conflict (owner) do update set
      next_seq = h.next_seq + 1,
      updated_at = now(),
      last_committed_at = greatest(
        clock_timestamp(),
        coalesce(h.last_committed_at, '-infinity'::timestamptz) + interval '1 microsecond')
    returning h.next_seq - 1, h.last_committed_at into new.seq, stamp;
  new.updated_at := now();
  insert into public.chatvault_changes (owner, seq, chat, version, deleted, summary, committed_at)
    values (new.owner, new.seq, new.chat, new.version, new.deleted, new.summary, stamp);
  if tg_op = 'UPDATE' then
    delete from public.chatvault_changes c
      where c.owner = new.owner and c.chat = new.chat and c.seq < new.seq
        and c.created_at < now() - public.chatvault_history_retention();
  end if;
  return new;
end
$$;

-- A new parameter, so a new function: the old one goes (with a default on
-- the new parameter, calls without it still resolve to the new one).
drop function public.chatvault_pull(bigint, integer, boolean);

-- `since_at`: the stamp the device's cursor carries (microseconds since the
-- Unix epoch), or null. Answers as before, plus `cursor_at` (the stamp of
-- the commit at `cursor`, or `since_at` for an empty page) and `diverged`.
create function public.chatvault_pull(
  since bigint default 0,
  lim integer default 1000,
  with_bodies boolean default false,
  since_at bigint default null
)
returns jsonb
language sql stable security definer set search_path = ''
as $$
  with page as (
    select c.seq, c.chat, c.version, c.deleted, c.summary, c.committed_at,
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
  ),
  last_kept as (
    select k.seq, k.committed_at from kept k order by k.seq desc limit 1
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
    'cursor', coalesce((select l.seq from last_kept l), greatest(since, 0)),
    'cursor_at', case
      when exists (select 1 from last_kept)
        then (select (extract(epoch from l.committed_at) * 1000000)::bigint from last_kept l)
      else since_at
    end,
    'more', (select count(*) from page) > (select count(*) from kept),
    'head', coalesce(
      (select h.next_seq - 1 from public.chatvault_heads h where h.owner = (select auth.uid())),
      0),
    'diverged', coalesce(
      (select c.committed_at > timestamptz 'epoch' + since_at * interval '1 microsecond'
       from public.chatvault_changes c
       where c.owner = (select auth.uid()) and c.seq <= greatest(since, 0)
       order by c.seq desc
       limit 1),
      false)
  )
$$;

revoke all on function public.chatvault_pull(bigint, integer, boolean, bigint) from public, anon;
grant execute on function public.chatvault_pull(bigint, integer, boolean, bigint) to authenticated;

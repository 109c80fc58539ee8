-- chatvault on Supabase, second migration: guards for the change feed.
--
-- Restores. `chatvault_pull` also returns `head`, the user's last assigned
-- sequence number. A device whose cursor is beyond it (the database was
-- restored to a point before commits the device had already read) restarts
-- its feed from the beginning instead of waiting, commit numbers being
-- handed out again, past commits it would never see.

create or replace function public.chatvault_pull(since bigint default 0, lim integer default 1000, with_bodies boolean default false)
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
    'more', (select count(*) from page) > (select count(*) from kept),
    'head', coalesce(
      (select h.next_seq - 1 from public.chatvault_heads h where h.owner = (select auth.uid())),
      0)
  )
$$;

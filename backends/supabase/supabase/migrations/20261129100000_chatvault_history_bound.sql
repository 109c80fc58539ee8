-- chatvault on Supabase, third migration: history bounded without waiting
-- for a chat's next write.
--
-- The record trigger prunes a chat's change-log entries superseded by a
-- later version and older than chatvault_history_retention() when that
-- chat is written again. A chat edited many times and then left alone kept
-- its whole history. chatvault_maintain() prunes the same entries for the
-- calling user across all chats; the client calls it from its periodic
-- maintenance (Storage::maintain). Each chat's latest entry is never
-- pruned, so a device whose cursor is older than the retention still
-- meets every chat's latest version after its cursor: it converges, having
-- skipped only intermediate versions.

create function public.chatvault_maintain()
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  me uuid := (select auth.uid());
  removed bigint;
begin
  if me is null then
    raise sqlstate '42501' using message = 'chatvault_maintain needs a signed-in user';
  end if;
  with pruned as (
    delete from public.chatvault_changes c
    where c.owner = me
      and c.created_at < now() - public.chatvault_history_retention()
      and exists (
        select 1 from public.chatvault_changes later
        where later.owner = c.owner and later.chat = c.chat and later.seq > c.seq
      )
    returning 1
  )
  select count(*) into removed from pruned;
  return jsonb_build_object('removed', removed);
end
$$;

revoke all on function public.chatvault_maintain() from public, anon, authenticated;
grant execute on function public.chatvault_maintain() to authenticated;

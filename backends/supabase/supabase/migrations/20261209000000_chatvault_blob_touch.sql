-- chatvault on Supabase, sixth migration: touched times for sealed blobs,
-- which garbage collection needs (docs/design.md §10.6).
--
-- Every put of a blob, new or not, sets its `touched_at` to the time of the
-- put (the stored bytes stay: any sealing of one plaintext opens alike),
-- and chatvault_blob_list reports each id's touched time, so a collecting
-- device deletes only blobs that no put has renewed within its grace
-- period. Blobs stored before this migration count as touched when it ran.

alter table public.chatvault_blobs
  add column touched_at timestamptz not null default now();

-- As before, and a put of an id already stored renews its touched time.
-- Returns {"stored": true} when this call stored it, {"stored": false}
-- when it was there already (and is now touched).
create or replace function public.chatvault_blob_put(id text, blob text)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
  blob_key bytea := public.chatvault_blob_id(id);
  sealed bytea := decode(blob, 'base64');
  inserted boolean;
begin
  if uid is null then
    raise sqlstate '42501' using message = 'chatvault_blob_put needs a signed-in user (auth.uid() is null)';
  end if;
  if octet_length(sealed) > public.chatvault_max_record_bytes() then
    raise sqlstate 'PT413' using
      message = 'chatvault blob too large',
      detail = json_build_object('size', octet_length(sealed), 'limit', public.chatvault_max_record_bytes())::text,
      hint = 'Split the attachment into smaller chunks, or raise chatvault_max_record_bytes() and the client limit together.';
  end if;
  insert into public.chatvault_blobs as b (owner, id, bytes, touched_at)
    values (uid, blob_key, sealed, clock_timestamp())
    on conflict on constraint chatvault_blobs_pkey
      do update set touched_at = clock_timestamp()
    returning (xmax = 0) into inserted;
  return jsonb_build_object('stored', inserted);
end
$$;

-- This user's blob ids after `after_id` (hex; null: from the first), in id
-- order, at most `lim` (1 to 1,000): {"ids": [hex…], "touched": [ms…],
-- "more": bool}, `touched` holding each id's touched time in milliseconds
-- since the Unix epoch and `more` saying whether further ids follow.
create or replace function public.chatvault_blob_list(after_id text default null, lim integer default 1000)
returns jsonb
language sql stable security definer set search_path = ''
as $$
  with wanted as (
    select least(greatest(coalesce(lim, 1000), 1), 1000) as n
  ), page as (
    select b.id, b.touched_at
    from public.chatvault_blobs b
    where b.owner = (select auth.uid())
      and (after_id is null or b.id > public.chatvault_blob_id(after_id))
    order by b.id
    limit (select n + 1 from wanted)
  ), numbered as (
    select id, touched_at, row_number() over (order by id) as i from page
  )
  select jsonb_build_object(
    'ids', coalesce(
      (select jsonb_agg(encode(id, 'hex') order by id) from numbered where i <= (select n from wanted)),
      '[]'::jsonb),
    'touched', coalesce(
      (select jsonb_agg(floor(extract(epoch from touched_at) * 1000)::bigint order by id)
         from numbered where i <= (select n from wanted)),
      '[]'::jsonb),
    'more', (select count(*) from page) > (select n from wanted))
$$;

-- Of the blob ids `ids` (hex, at most 1,000), those this user does not
-- store: {"missing": [hex…]}. How a device checks, after pushing a record,
-- that no collector deleted a blob the record names.
create function public.chatvault_blob_missing(ids text[])
returns jsonb
language sql stable security definer set search_path = ''
as $$
  select jsonb_build_object('missing', coalesce(jsonb_agg(wanted.hex order by wanted.hex), '[]'::jsonb))
  from (
    select distinct w.hex
    from unnest(coalesce(ids, '{}'::text[])) with ordinality as w(hex, n)
    where w.n <= 1000
  ) wanted
  where not exists (
    select 1 from public.chatvault_blobs b
    where b.owner = (select auth.uid()) and b.id = public.chatvault_blob_id(wanted.hex)
  )
$$;

revoke all on function public.chatvault_blob_missing(text[]) from public, anon, authenticated;
grant execute on function public.chatvault_blob_missing(text[]) to authenticated;

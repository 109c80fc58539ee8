-- chatvault on Supabase, fifth migration: sealed blobs (attachment chunks).
--
-- A blob is immutable and content-addressed: its id is a keyed hash of its
-- plaintext (32 bytes, computed on the device under a secret the server
-- never sees), its bytes are sealed on the device. So a blob is written
-- once and never changed: the first write of an id wins, and a second
-- write of the same id (a retry, another device uploading the same file)
-- changes nothing and succeeds. Blobs are not records: they take no part
-- in the change feed and no head row lock; a record that references a blob
-- is what makes it visible to other devices.
--
-- Why a table and not Supabase Storage: the conformance suite must run
-- against what it tests, and Supabase Storage (its own API server in front
-- of S3) cannot be run here, while this table runs on the same PostgreSQL
-- and PostgREST (or the test gateway) as the records, under the same
-- access model. Blobs are bounded by chatvault_max_record_bytes()
-- like records (attachments are split into chunks under that limit).
--
-- Access model as the second migration left it: the RPCs are SECURITY
-- DEFINER (owned by the migration's role, `search_path = ''`, every name
-- schema-qualified, every row selected by `auth.uid()` explicitly), and
-- `authenticated` holds only SELECT on the table, under row-level
-- security: reads through the table endpoint show a user their own blob
-- rows, writes there are refused. A blob is never updated (the put does
-- nothing when the id is taken), and a CHECK constraint bounds its size on
-- every path.

create table public.chatvault_blobs (
  owner uuid not null default auth.uid(),
  id bytea not null check (octet_length(id) = 32),
  bytes bytea not null check (octet_length(bytes) <= public.chatvault_max_record_bytes()),
  created_at timestamptz not null default now(),
  -- bytea compares byte by byte, so this key orders blobs by id: what
  -- chatvault_blob_list pages by.
  primary key (owner, id)
);

alter table public.chatvault_blobs enable row level security;

create policy chatvault_blobs_own_select on public.chatvault_blobs
  for select to authenticated using (owner = (select auth.uid()));

-- A blob id from the client: 64 hex digits.
create function public.chatvault_blob_id(id text) returns bytea
language plpgsql immutable set search_path = ''
as $$
begin
  if id is null or id !~ '^[0-9a-fA-F]{64}$' then
    raise sqlstate '22023' using message = format('not a blob id (64 hex digits): %L', id);
  end if;
  return decode(id, 'hex');
end
$$;

-- Stores the sealed blob `blob` (base64) under `id` (hex) unless this user
-- already has a blob with that id (the first write wins). Returns
-- {"stored": true} when this call stored it, {"stored": false} when it was
-- there already.
create function public.chatvault_blob_put(id text, blob text)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
  blob_key bytea := public.chatvault_blob_id(id);
  sealed bytea := decode(blob, 'base64');
  stored integer;
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
  insert into public.chatvault_blobs (owner, id, bytes)
    values (uid, blob_key, sealed)
    on conflict on constraint chatvault_blobs_pkey do nothing;
  get diagnostics stored = row_count;
  return jsonb_build_object('stored', stored > 0);
end
$$;

-- The sealed blob `id` (hex) as {"bytes": base64}, or null if this user
-- has none.
create function public.chatvault_blob_get(id text)
returns jsonb
language sql stable security definer set search_path = ''
as $$
  select jsonb_build_object('bytes', translate(encode(b.bytes, 'base64'), E'\n', ''))
  from public.chatvault_blobs b
  where b.owner = (select auth.uid()) and b.id = public.chatvault_blob_id(chatvault_blob_get.id)
$$;

-- This user's blob ids after `after_id` (hex; null: from the first), in id
-- order, at most `lim` (1 to 1,000): {"ids": [hex…], "more": bool}, `more`
-- saying whether further ids follow. One jsonb value, which Supabase's max
-- rows does not cut.
create function public.chatvault_blob_list(after_id text default null, lim integer default 1000)
returns jsonb
language sql stable security definer set search_path = ''
as $$
  with wanted as (
    select least(greatest(coalesce(lim, 1000), 1), 1000) as n
  ), page as (
    select b.id
    from public.chatvault_blobs b
    where b.owner = (select auth.uid())
      and (after_id is null or b.id > public.chatvault_blob_id(after_id))
    order by b.id
    limit (select n + 1 from wanted)
  ), numbered as (
    select id, row_number() over (order by id) as i from page
  )
  select jsonb_build_object(
    'ids', coalesce(
      (select jsonb_agg(encode(id, 'hex') order by id) from numbered where i <= (select n from wanted)),
      '[]'::jsonb),
    'more', (select count(*) from page) > (select n from wanted))
$$;

-- Deletes this user's blob `id` (hex), for garbage collection. Returns
-- {"deleted": bool}; deleting a missing blob is not an error.
create function public.chatvault_blob_delete(id text)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
  blob_key bytea := public.chatvault_blob_id(id);
  removed integer;
begin
  if uid is null then
    raise sqlstate '42501' using message = 'chatvault_blob_delete needs a signed-in user (auth.uid() is null)';
  end if;
  delete from public.chatvault_blobs b where b.owner = uid and b.id = blob_key;
  get diagnostics removed = row_count;
  return jsonb_build_object('deleted', removed > 0);
end
$$;

revoke all on table public.chatvault_blobs from public, anon, authenticated;
grant select on table public.chatvault_blobs to authenticated;

revoke all on function
  public.chatvault_blob_id(text),
  public.chatvault_blob_put(text, text),
  public.chatvault_blob_get(text),
  public.chatvault_blob_list(text, integer),
  public.chatvault_blob_delete(text)
  from public, anon, authenticated;
grant execute on function
  public.chatvault_blob_id(text),
  public.chatvault_blob_put(text, text),
  public.chatvault_blob_get(text),
  public.chatvault_blob_list(text, integer),
  public.chatvault_blob_delete(text)
  to authenticated;

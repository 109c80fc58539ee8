//! chatvault backend: Supabase (PostgREST + SQL migrations with RLS)

-- The reference auth service's users (and what the `auth` import's postgres backend reads).
-- Plugins cannot read this table: their roles hold no privilege on it.
CREATE TABLE IF NOT EXISTS users (
    id         uuid PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    name       text NOT NULL,
    role       text NOT NULL DEFAULT 'user',
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Each plugin's database identity in this database: its role and the password the host
-- logs in with. The password is random, made once by the first host that loads the
-- plugin; every host on this database reads it from here, so they agree without
-- configuration. Plugins cannot read this table (their roles hold no privilege on it).
CREATE TABLE eventhost_plugin_roles (
    plugin      text PRIMARY KEY,
    role        text NOT NULL UNIQUE,
    password    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON eventhost_plugin_roles FROM PUBLIC;

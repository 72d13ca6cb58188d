--------------------------------------------------------------------------
-- Permissions on resource trees (see docs/inbox.md)
--
-- Levels NONE < READ < APPEND < WRITE < ADMIN are stored as 0..4.  A grant
-- on a resource holds for its whole subtree: the level of a principal on a
-- resource is the highest level granted to it on the resource or any of its
-- ancestors.  When notify_ext.permission_function is set, that function
-- decides instead (has_permission() only; the grants stay as they are).
--------------------------------------------------------------------------

CREATE TABLE notify_ext.permissions (
    principal    text        NOT NULL CHECK (principal <> ''),
    resource_id  text        NOT NULL CHECK (resource_id <> ''),
    level        smallint    NOT NULL CHECK (level BETWEEN 1 AND 4),
    granted_by   text        NOT NULL,
    granted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, resource_id)
);
-- Finds the grantees (and the ADMINs) of a resource.
CREATE INDEX permissions_resource_idx ON notify_ext.permissions (resource_id, level);
SELECT pg_catalog.pg_extension_config_dump('notify_ext.permissions', '');

-- Everyone may read their own grants; changes go through the functions.
REVOKE ALL ON notify_ext.permissions FROM PUBLIC;
GRANT SELECT ON notify_ext.permissions TO PUBLIC;
ALTER TABLE notify_ext.permissions ENABLE ROW LEVEL SECURITY;

"""What crew is made of, read from the catalog: whether a stage table may take its place, and
what the stage must carry over when it does (app/ingest/bulk.py). SQL only."""

# Only a crew the run's role owns, with nothing a drop would take along unseen and nothing the
# stage would not carry over: an operator's trigger would miss the stage's rows, a NOT VALID
# check would be validated on it, per-column planner settings, comments on indexes and
# triggers, policies, toast settings, a clustering index, index tablespaces and primary key
# options would be lost, an invalid index would be built. Any of them keeps a run on the plain
# path.
OUR_TRIGGERS = ("crew_name_trigrams_on_insert", "crew_name_trigrams_on_update")
REPLACEABLE = f"""
SELECT c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    AND c.relkind = 'r' AND c.reltablespace = 0 AND c.relreplident = 'd'
    AND c.relpersistence = 'p' AND c.relam = (SELECT oid FROM pg_am WHERE amname = 'heap')
    AND NOT c.relrowsecurity AND NOT c.relhasrules
    AND (SELECT t.reloptions FROM pg_class t WHERE t.oid = c.reltoastrelid) IS NULL
    AND NOT EXISTS (SELECT FROM pg_statistic_ext WHERE stxrelid = c.oid)
    AND NOT EXISTS (SELECT FROM pg_publication_rel WHERE prrelid = c.oid)
    AND NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = c.oid)
    AND NOT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = c.oid OR inhparent = c.oid)
    AND NOT EXISTS (SELECT FROM pg_seclabel WHERE objoid = c.oid)
    AND NOT EXISTS (  -- a clustering or invalid index, one in a tablespace, primary key options
        SELECT FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
        WHERE i.indrelid = c.oid AND (i.indisclustered OR NOT i.indisvalid
            OR x.reltablespace <> 0 OR (i.indisprimary AND x.reloptions IS NOT NULL))
    )
    AND NOT EXISTS (
        SELECT FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal
            AND tgname NOT IN {OUR_TRIGGERS}
    )
    AND NOT EXISTS (
        SELECT FROM pg_attribute a
        WHERE a.attnum > 0 AND NOT a.attisdropped AND (
            a.attacl IS NOT NULL AND a.attrelid = c.oid
            OR coalesce(a.attstattarget, -1) >= 0
            OR EXISTS (SELECT FROM unnest(a.attoptions) o WHERE o LIKE 'n\\_distinct%')
        )
        AND a.attrelid IN (
            SELECT c.oid UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid = c.oid
        )
    )
    AND NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE (conrelid = c.oid AND (contype NOT IN ('p', 'c', 'n') OR NOT convalidated))
            OR confrelid = c.oid
    )
    AND NOT EXISTS (
        SELECT FROM pg_description
        WHERE objoid IN (SELECT indexrelid FROM pg_index WHERE indrelid = c.oid)
            OR objoid IN (SELECT oid FROM pg_constraint WHERE conrelid = c.oid AND contype = 'p')
            OR objoid IN (SELECT oid FROM pg_trigger WHERE tgrelid = c.oid)
    )
    AND NOT EXISTS (  -- views, and functions whose bodies name crew
        SELECT FROM pg_depend
        WHERE refclassid = 'pg_class'::regclass AND refobjid = c.oid AND deptype = 'n'
            AND classid IN ('pg_rewrite'::regclass, 'pg_proc'::regclass)
    )
FROM pg_class c WHERE c.oid = 'crew'::regclass
"""
STAGE = """
CREATE TABLE {stage} (LIKE crew INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS
    INCLUDING STORAGE INCLUDING STATISTICS INCLUDING COMMENTS INCLUDING COMPRESSION)
"""
# What the moved table must carry over: the primary key, the other indexes, the triggers.
PRIMARY_KEY = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'crew'::regclass AND contype = 'p'
"""
INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'crew'::regclass AND NOT i.indisprimary ORDER BY c.relname
"""
TRIGGERS = """
SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger
WHERE tgrelid = 'crew'::regclass AND NOT tgisinternal ORDER BY tgname
"""
# A grantee of crew as GRANT and REVOKE name it (`a`: a row of aclexplode(relacl)).
GRANTEE = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END"
TABLE_SETTINGS = f"""
SELECT c.reloptions, obj_description(c.oid, 'pg_class'),
    (SELECT coalesce(array_agg(format('GRANT %s ON crew TO %s%s', a.privilege_type,
        {GRANTEE},
        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)), '{{}}')
     FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner)
FROM pg_class c WHERE c.oid = 'crew'::regclass
"""

# Who holds privileges on crew besides its owner, as a REVOKE names them.
GRANTEES = f"""
SELECT DISTINCT
    {GRANTEE}
FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'crew'::regclass AND a.grantee <> c.relowner
"""

# The columns a stage's rows are written with: all but generated ones (name_folded).
COLUMNS = """
SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
WHERE attrelid = 'crew'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
"""

"""The two-role set-up on PostgreSQL (docs/security.md): the role that runs the migrations owns the tables; the
role the web console and the workers connect as gets normal rights on every table but only INSERT and SELECT on the
audit log. Not owning the audit table, it cannot UPDATE, DELETE, TRUNCATE, DROP it or disable its triggers."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction

AUDIT_TABLE = "audit_auditevent"


class GrantRefused(Exception):
    """The role named cannot be the restricted runtime role (it owns the tables, or is a superuser)."""


@dataclass(frozen=True)
class RuntimeRoleGrants:
    role: str
    owner: str
    database: str
    schema: str

    @property
    def statements(self) -> list[str]:
        role, owner, schema = _quoted(self.role), _quoted(self.owner), _quoted(self.schema)
        audit = f"{schema}.{_quoted(AUDIT_TABLE)}"
        return [
            f"GRANT CONNECT ON DATABASE {_quoted(self.database)} TO {role};",
            f"GRANT USAGE ON SCHEMA {schema} TO {role};",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};",
            # The audit log: what the console does to it, and nothing else. (No TRUNCATE, REFERENCES or TRIGGER
            # either; ownership, needed to ALTER, DROP or disable its triggers, stays with the owner.)
            f"REVOKE ALL ON TABLE {audit} FROM {role};",
            f"GRANT SELECT, INSERT ON TABLE {audit} TO {role};",
            # Tables later migrations create get the normal rights too (run this again after `migrate` anyway).
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role};",
        ]


def runtime_role_grants(*, role: str) -> RuntimeRoleGrants:
    """The grants for `role` on the console's database (the default connection: run as the owner, after migrate).
    Refuses a role that owns the audit table, belongs to its owner or is a superuser: no grant would restrict it."""
    if connection.vendor != "postgresql":
        raise GrantRefused(f"the two-role set-up is PostgreSQL's; this database is {connection.vendor}")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_database(), schemaname, tableowner FROM pg_tables WHERE tablename = %s "
            "AND schemaname = ANY(current_schemas(false))",
            [AUDIT_TABLE],
        )
        found = cursor.fetchone()
        if found is None:
            raise GrantRefused(f"no {AUDIT_TABLE} table here: run `manage.py migrate` first")
        database, schema, owner = found
        cursor.execute(
            "SELECT rolsuper, pg_has_role(rolname, %s, 'MEMBER') FROM pg_roles WHERE rolname = %s", [owner, role]
        )
        flags = cursor.fetchone()
    if flags is None:
        raise GrantRefused(f"no role named {role!r}: create it first (CREATE ROLE {_quoted(role)} LOGIN PASSWORD ...)")
    if flags[0]:
        raise GrantRefused(f"{role} is a superuser: no grant restricts it")
    if flags[1]:
        raise GrantRefused(f"{role} owns the console's tables (or is a member of {owner}): use another role")
    return RuntimeRoleGrants(role=role, owner=owner, database=database, schema=schema)


def runtime_role_grants_apply(grants: RuntimeRoleGrants) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in grants.statements:
            cursor.execute(statement)


def _quoted(identifier: str) -> str:
    """A PostgreSQL identifier, quoted (a double quote inside doubled), so any role name is safe to print and run."""
    return '"' + identifier.replace('"', '""') + '"'

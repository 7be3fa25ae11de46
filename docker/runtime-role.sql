-- The role the web console, the workers and beat connect as (docs/security.md), run by docker-compose.yml's
-- db-roles service on every start: created once, its password (DRCONSOLE_APP_PASSWORD) set each time. What it may
-- do comes from `manage.py audit grant-runtime-role drconsole_app --apply`, which the migrate service runs, as the
-- tables' owner, after every migrate: normal rights on the console's tables, only INSERT and SELECT on the audit log.
\set ON_ERROR_STOP on
\getenv app_password DRCONSOLE_APP_PASSWORD
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drconsole_app') AS missing \gset
\if :missing
CREATE ROLE drconsole_app LOGIN;
\endif
ALTER ROLE drconsole_app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'app_password';

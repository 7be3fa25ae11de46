"""The Spanish translation: pages follow Accept-Language and the language switcher, and the catalogue is complete.

A string marked for translation but missing from locale/es, untranslated or fuzzy there, or a .mo older than its
.po, fails here with the commands that fix it.
"""

from __future__ import annotations

import ast
import gettext
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from backups.models import BackupArtifact
from backups.services import BackupRefused, backup_artifact_request
from inventory.models import Datastore
from restores.models import RestoreRun
from restores.services import restore_run_request
from tests.factories import (
    BackupArtifactFactory,
    DatastoreFactory,
    DatastoreHealthFactory,
    EnvironmentFactory,
    ReprocessBatchFactory,
    user_in_groups,
)
from tests.support.web import logged_in_with_password

LOCALE_DIR = Path(settings.BASE_DIR) / "locale"
PO_FILE = LOCALE_DIR / "es" / "LC_MESSAGES" / "django.po"
MO_FILE = PO_FILE.with_suffix(".mo")
MAKEMESSAGES_IGNORE = [".venv", "var", "bench", "tests", "staticfiles"]
HOW_TO_FIX = (
    "Run `DJANGO_DEBUG=True .venv/bin/python manage.py makemessages -l es "
    + " ".join(f"--ignore={pattern}" for pattern in MAKEMESSAGES_IGNORE)
    + "`, translate every new or fuzzy entry in locale/es/LC_MESSAGES/django.po (and drop its '#, fuzzy' flag), "
    "then `DJANGO_DEBUG=True .venv/bin/python manage.py compilemessages -l es --ignore=.venv` and commit both files."
)

ES = {"HTTP_ACCEPT_LANGUAGE": "es"}
EN = {"HTTP_ACCEPT_LANGUAGE": "en"}

# url name -> (Spanish strings, English strings) the page shows with the data of the `console_data` fixture.
PAGES = {
    "overview:dashboard": (
        [
            "<h1>Panel</h1>",
            "Última copia de seguridad correcta",
            "Sin copia de seguridad verificada",
            "1 restauración pendiente de aprobación",
        ],
        ["<h1>Dashboard</h1>", "Last successful backup", "No verified backup", "1 restore is waiting for approval"],
    ),
    "backups:artifact_list": (
        ["<h1>Copias de seguridad</h1>", "Completada", "Sin verificar", "Almacén de datos"],
        ["<h1>Backups</h1>", "Succeeded", "Not verified", "Datastore"],
    ),
    "restores:run_list": (
        ["<h1>Restauraciones</h1>", "Pendiente de aprobación", "0 de 2 aprobaciones"],
        ["<h1>Restores</h1>", "Awaiting approval", "0 of 2 approvals"],
    ),
    "restores:approval_list": (
        ["<h1>Restauraciones pendientes de aprobación</h1>", "Sobrescribe", "todas las tablas de orders"],
        ["<h1>Restores awaiting approval</h1>", "Overwrites", "every table of orders"],
    ),
    "audit:event_list": (
        ["<h1>Registro de auditoría</h1>", "Restauración solicitada", "Exportar todos los eventos a CSV"],
        ["<h1>Audit log</h1>", "Restore requested", "Export all events as CSV"],
    ),
}
# English words of the shared layout that must not be left on a Spanish page.
LAYOUT_EN = ["Log out", ">Dashboard<", ">Backups<", ">Restores<", ">Approvals<", ">Audit log<"]


@pytest.fixture
def console_data(db: None) -> RestoreRun:
    """A protected datastore with a succeeded, unverified backup and a restore of it awaiting two approvals."""
    prod = EnvironmentFactory(name="prod", protected=True, required_approvals=2)
    backup: BackupArtifact = BackupArtifactFactory(
        datastore=DatastoreFactory(name="orders", environment=prod),
        status="succeeded",
        sha256="a" * 64,
        storage_key="k",
    )
    # Known for two days: its first verified backup was due (a newer datastore would not be late yet).
    Datastore.objects.filter(pk=backup.datastore_id).update(created_at=timezone.now() - timedelta(days=2))
    DatastoreHealthFactory(datastore=backup.datastore)  # a worker reached it: which database it is is known
    return restore_run_request(
        artifact=backup,
        target_kind=RestoreRun.TargetKind.IN_PLACE,
        requested_by=user_in_groups("olga", "operator"),
        reason="bad migration",
        confirm="orders",
        enqueue=False,
    )


@pytest.fixture
def viewer_client(client: Client, db: None) -> Client:
    client.force_login(user_in_groups("vera", "viewer"))
    return client


def page(client: Client, name: str, **headers: Any) -> str:
    response = client.get(reverse(name), **headers)
    assert response.status_code == 200, f"{name}: {response.status_code}"
    return response.content.decode()


@pytest.mark.parametrize("name", PAGES)
def test_pages_are_in_spanish_with_accept_language_es(
    viewer_client: Client, console_data: RestoreRun, name: str
) -> None:
    html = page(viewer_client, name, **ES)
    spanish, english = PAGES[name]
    assert '<html lang="es">' in html
    for text in spanish + ["Cerrar sesión", ">Panel<", ">Copias de seguridad<", ">Registro de auditoría<"]:
        assert text in html, f"{name}: {text!r} missing from the Spanish page"
    for text in english + LAYOUT_EN:
        assert text not in html, f"{name}: English {text!r} left on the Spanish page"


@pytest.mark.parametrize("name", PAGES)
def test_pages_are_in_english_with_accept_language_en(
    viewer_client: Client, console_data: RestoreRun, name: str
) -> None:
    html = page(viewer_client, name, **EN)
    spanish, english = PAGES[name]
    assert '<html lang="en">' in html
    for text in english + ["Log out"]:
        assert text in html, f"{name}: {text!r} missing from the English page"
    for text in spanish + ["Cerrar sesión"]:
        assert text not in html, f"{name}: Spanish {text!r} on the English page"


def test_login_page_is_in_spanish(client: Client, db: None) -> None:
    html = page(client, "login", **ES)
    assert '<html lang="es">' in html
    for text in ["<h1>Iniciar sesión</h1>", "Nombre de usuario", "Contraseña"]:
        assert text in html
    assert "Password" not in html

    response = client.post(reverse("login"), {"username": "nobody", "password": "wrong"}, **ES)
    assert "El nombre de usuario y la contraseña no coinciden." in response.content.decode()


def test_language_switcher_overrides_the_browser(viewer_client: Client) -> None:
    response = viewer_client.post(reverse("set_language"), {"language": "es", "next": "/"}, **EN)
    assert response.status_code == 302
    html = page(viewer_client, "overview:dashboard", **EN)
    assert '<html lang="es">' in html and "<h1>Panel</h1>" in html
    assert '<option value="es" lang="es" selected>español</option>' in html


def test_a_refusal_is_worded_in_the_language_of_the_page_and_in_english_elsewhere(
    client: Client, console_data: RestoreRun
) -> None:
    """Services word their refusals in the active language: the page's user's, and English on the command line
    and in workers (where nothing activates another)."""
    orders = console_data.target_datastore
    running = BackupArtifactFactory(datastore=orders, status="running")
    client.force_login(user_in_groups("oscar", "operator"))
    response = client.post(reverse("overview:datastore_backup", args=[orders.pk]), follow=True, **ES)
    html = response.content.decode()
    assert f"No se puede respaldar orders: ya hay una copia de seguridad de orders en curso (#{running.pk})" in html

    translation.deactivate()  # what a command-line process or a worker runs with: no request activated a language
    with pytest.raises(BackupRefused, match=rf"^a backup of orders is already running \(#{running.pk}\)$"):
        backup_artifact_request(datastore=orders, trigger="cli")


def test_the_requester_is_told_in_spanish_why_they_cannot_approve(client: Client, console_data: RestoreRun) -> None:
    logged_in_with_password(client, user_in_groups("ana", "operator", "approver"))
    run = restore_run_request(
        artifact=console_data.artifact,
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        new_database_name="check",
        requested_by=User.objects.get(username="ana"),
        reason="check it restores",
        enqueue=False,
    )
    html = client.post(reverse("restores:run_approve", args=[run.pk]), follow=True, **ES).content.decode()
    assert f"No aprobada: ana solicitó la restauración #{run.pk} y no puede decidir sobre ella." in html


def test_a_bad_csv_is_explained_line_by_line_in_spanish(client: Client, db: None) -> None:
    prod = EnvironmentFactory(name="prod")
    client.force_login(user_in_groups("oscar", "operator"))
    response = client.post(
        reverse("reprocess:batch_create"),
        {"environment": prod.pk, "source": "csv", "csv_text": "ws-1,10\nws-1;11\nws-1,\n"},
        **ES,
    )
    html = response.content.decode()
    assert "No se creó el lote:" in html
    assert "línea 2: se esperaban 2 columnas (workspace_id,document_id) y hay 1" in html
    assert "línea 3: document_id está vacío" in html


def test_reprocess_and_datastore_pages_are_in_spanish(viewer_client: Client, console_data: RestoreRun) -> None:
    orders = console_data.target_datastore
    batch = ReprocessBatchFactory(environment=orders.environment, documents=[("ws-1", "1")])
    pages = {
        reverse("reprocess:batch_list"): ["<h1>Reprocesar documentos</h1>", "Borrador", "0 de 1 aceptados"],
        reverse("reprocess:batch_detail", args=[batch.pk]): ["Lote de reprocesamiento #", "Sin enviar"],
        reverse("overview:datastore_detail", args=[orders.name]): [
            "Almacén de datos orders (prod)",
            "Programación de copias de seguridad",
            "Simulacros de restauración",
            "Ningún simulacro todavía",
            "Sin política de retención: se conservan todas las copias de seguridad.",
            # a backup a restore is waiting for is never expired, and the page says so in Spanish
            f"en uso por la restauración #{console_data.pk}",
        ],
    }
    for url, spanish in pages.items():
        html = viewer_client.get(url, **ES).content.decode()
        for text in spanish:
            assert text in html, f"{url}: {text!r} missing from the Spanish page"
        for english in ["Draft", "Not sent yet", "Backup schedule", "Restore drills", "restore #", *LAYOUT_EN]:
            assert english not in html, f"{url}: English {english!r} left on the Spanish page"


# The catalogue ----------------------------------------------------------------------------------------------------


def read_po(path: Path) -> list[dict[str, Any]]:
    """The entries of a .po file: msgid, msgid_plural, msgstr or msgstr[n], and flags. Obsolete (#~) entries and
    the header are left out. Enough of the format for the files makemessages writes."""
    entries = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        entry: dict[str, Any] = {"flags": set()}
        key = None
        for line in block.splitlines():
            if line.startswith("#,"):
                entry["flags"].update(flag.strip() for flag in line[2:].split(","))
            elif line.startswith("#"):
                continue
            elif line.startswith('"') and key:
                entry[key] += ast.literal_eval(line)
            elif match := re.match(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?) (".*")$', line):
                key = match.group(1)
                entry[key] = ast.literal_eval(match.group(2))
        if entry.get("msgid"):
            entries.append(entry)
    return entries


def problems(entries: list[dict[str, Any]]) -> list[str]:
    found = []
    for entry in entries:
        translations = [value for key, value in entry.items() if key.startswith("msgstr")]
        if "fuzzy" in entry["flags"]:
            found.append(f"fuzzy: {entry['msgid']!r}")
        elif not translations or not all(translations):
            found.append(f"untranslated: {entry['msgid']!r}")
    return found


def test_spanish_catalogue_is_complete() -> None:
    entries = read_po(PO_FILE)
    assert len(entries) > 300, "the Spanish catalogue lost most of its entries"
    found = problems(entries)
    assert not found, f"{len(found)} Spanish entries need work: {'; '.join(found[:20])}. {HOW_TO_FIX}"
    header = PO_FILE.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert "#, fuzzy" not in header, f"the header of {PO_FILE.name} is fuzzy. {HOW_TO_FIX}"


def test_compiled_catalogue_matches_the_po_file() -> None:
    assert MO_FILE.exists(), f"{MO_FILE} is missing. {HOW_TO_FIX}"
    with MO_FILE.open("rb") as mo:
        catalog = gettext.GNUTranslations(mo)._catalog  # type: ignore[attr-defined]
    stale = []
    for entry in read_po(PO_FILE):
        context = f"{entry['msgctxt']}\x04" if "msgctxt" in entry else ""
        msgid = context + entry["msgid"]
        if "msgid_plural" in entry:
            for key, value in entry.items():
                if key.startswith("msgstr[") and catalog.get((msgid, int(key[7:-1]))) != value:
                    stale.append(entry["msgid"])
        elif catalog.get(msgid) != entry["msgstr"]:
            stale.append(entry["msgid"])
    assert not stale, (
        f"django.mo is older than django.po ({len(stale)} entries differ, e.g. {stale[0]!r}). {HOW_TO_FIX}"
    )


def test_every_marked_string_is_in_the_spanish_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """makemessages, run on a copy of the project, finds nothing new or fuzzy: a string marked for translation in
    the code but not yet in locale/es fails here, not on a Spanish page."""
    if not shutil.which("xgettext") or not shutil.which("msgmerge"):
        pytest.fail("gettext is not installed: apt-get install -y gettext (`make test` does)")
    project = tmp_path / "project"
    shutil.copytree(
        settings.BASE_DIR,
        project,
        ignore=shutil.ignore_patterns(*MAKEMESSAGES_IGNORE, ".git", "*_cache", "__pycache__", "*.mo", "node_modules"),
    )
    monkeypatch.chdir(project)
    monkeypatch.setattr(settings, "LOCALE_PATHS", [project / "locale"])
    call_command("makemessages", locale=["es"], ignore_patterns=MAKEMESSAGES_IGNORE, verbosity=0)
    found = problems(read_po(project / "locale" / "es" / "LC_MESSAGES" / "django.po"))
    assert not found, f"{len(found)} strings marked for translation are not translated: {'; '.join(found[:20])}. " + (
        HOW_TO_FIX
    )

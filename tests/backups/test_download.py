"""Downloading a backup's file: as stored, streamed, audited; protected data only with someone else's approval,
once, within its window. Real pg_dump backups in a real folder; the web through the test client, the command line
through call_command (the person named types their own password: tests/conftest.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from backups.downloads import DownloadRefused, download_request_approve, download_request_create
from backups.models import BackupArtifact, DownloadRequest
from tests.factories import EnvironmentFactory, UserFactory, user_in_groups
from tests.support.postgres import SourceDb, backup_taken

pytestmark = pytest.mark.django_db


def stored_bytes(artifact_dir: Path, artifact: BackupArtifact) -> bytes:
    return (artifact_dir / artifact.storage_key).read_bytes()


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def download(client: Client, artifact: BackupArtifact, **data: str) -> Any:
    return client.post(reverse("backups:artifact_download", args=[artifact.pk]), data)


@pytest.fixture
def backup(source_db: SourceDb) -> BackupArtifact:
    return backup_taken(source_db.url_env)


@pytest.fixture
def protected_backup(source_db: SourceDb) -> BackupArtifact:
    return backup_taken(source_db.url_env, environment=EnvironmentFactory(name="prod", protected=True))


@pytest.fixture
def second_approver(db: None) -> Any:
    """Bea, an approver who is not an operator: she decides, she never downloads."""
    return user_in_groups("bea", "approver")


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("pk"))


# --- unprotected data ----------------------------------------------------------------------------------------------


def test_a_viewer_is_refused_and_the_refusal_is_audited(backup: BackupArtifact, viewer: Any) -> None:
    response = download(logged_in(viewer), backup)
    assert response.status_code == 403
    assert b"may not download backups" in response.content
    refused = events(AuditEvent.Action.BACKUP_DOWNLOAD_REFUSED)
    assert [e.actor_id for e in refused] == [viewer.pk]
    assert not events(AuditEvent.Action.BACKUP_DOWNLOADED)


def test_an_operator_gets_the_stored_bytes_streamed_and_audited(
    backup: BackupArtifact, operator: Any, artifact_dir: Path
) -> None:
    response = download(logged_in(operator), backup)
    assert response.status_code == 200 and response.streaming
    body = b"".join(response.streaming_content)
    assert body == stored_bytes(artifact_dir, backup)
    assert response["Content-Length"] == str(backup.size_bytes) == str(len(body))
    assert response["Content-Disposition"] == f'attachment; filename="{Path(backup.storage_key).name}"'
    assert response["Content-Type"] == "application/octet-stream"
    (event,) = events(AuditEvent.Action.BACKUP_DOWNLOADED)
    assert event.actor_id == operator.pk
    assert event.details["location"] == "default" and event.details["key"] == backup.storage_key
    assert "http" not in json.dumps(event.details)


def test_a_download_is_post_only(backup: BackupArtifact, operator: Any) -> None:
    assert logged_in(operator).get(reverse("backups:artifact_download", args=[backup.pk])).status_code == 405


def test_the_page_shows_the_download_button_to_operators_only(
    backup: BackupArtifact, operator: Any, viewer: Any
) -> None:
    url = reverse("backups:artifact_detail", args=[backup.pk])
    assert reverse("backups:artifact_download", args=[backup.pk]) in logged_in(operator).get(url).content.decode()
    assert reverse("backups:artifact_download", args=[backup.pk]) not in logged_in(viewer).get(url).content.decode()


def test_a_file_that_does_not_match_its_record_ends_short(
    backup: BackupArtifact, operator: Any, artifact_dir: Path
) -> None:
    path = artifact_dir / backup.storage_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    response = download(logged_in(operator), backup)
    body = b"".join(response.streaming_content)
    assert len(body) < int(response["Content-Length"])  # the client sees a failed download, not a whole bad file


# --- protected data ------------------------------------------------------------------------------------------------


def test_protected_data_takes_another_persons_approval_then_one_download(
    protected_backup: BackupArtifact, approver: Any, second_approver: Any, artifact_dir: Path
) -> None:
    abel, bea = logged_in(approver), logged_in(second_approver)
    backup = protected_backup

    response = download(abel, backup)
    assert response.status_code == 403 and b"holds protected data" in response.content

    abel.post(reverse("backups:download_request_new", args=[backup.pk]), {"reason": "legal hold copy"})
    (request,) = DownloadRequest.objects.all()
    assert request.status == DownloadRequest.Status.AWAITING_APPROVAL and request.requested_by == approver

    approve = reverse("backups:download_request_approve", args=[request.pk])
    abel.post(approve, {"reauth_password": "abel-password"})  # his own: refused, even with his password
    request.refresh_from_db()
    assert request.status == DownloadRequest.Status.AWAITING_APPROVAL

    assert bea.post(approve).status_code == 403  # no recent password: the re-authentication page
    request.refresh_from_db()
    assert request.status == DownloadRequest.Status.AWAITING_APPROVAL
    bea.post(approve, {"reauth_password": "bea-password", "comment": "ok"})
    request.refresh_from_db()
    assert request.status == DownloadRequest.Status.APPROVED and request.approved_by == second_approver
    assert request.expires_at is not None and request.expires_at > timezone.now() + timedelta(minutes=59)

    fetch = reverse("backups:download_request_fetch", args=[request.pk])
    assert bea.post(fetch).status_code == 403  # the approval is the requester's only
    response = abel.post(fetch)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == stored_bytes(artifact_dir, backup)
    request.refresh_from_db()
    assert request.status == DownloadRequest.Status.USED and request.used_at is not None

    second = abel.post(fetch)
    assert second.status_code == 403 and b"downloaded" in second.content
    assert len(events(AuditEvent.Action.BACKUP_DOWNLOADED)) == 1
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {AuditEvent.Action.DOWNLOAD_REQUESTED, AuditEvent.Action.DOWNLOAD_APPROVED} <= actions


def test_an_approval_expires_unused(protected_backup: BackupArtifact, approver: Any, second_approver: Any) -> None:
    request = download_request_create(artifact=protected_backup, requested_by=approver, reason="audit")
    download_request_approve(request_id=request.pk, approver=second_approver)
    DownloadRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = logged_in(approver).post(reverse("backups:download_request_fetch", args=[request.pk]))
    assert response.status_code == 403
    request.refresh_from_db()
    assert request.status == DownloadRequest.Status.EXPIRED
    assert events(AuditEvent.Action.DOWNLOAD_EXPIRED)


def test_a_superuser_cannot_approve_their_own_request(protected_backup: BackupArtifact) -> None:
    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    request = download_request_create(artifact=protected_backup, requested_by=root, reason="mine")
    with pytest.raises(DownloadRefused, match="cannot decide on it"):
        download_request_approve(request_id=request.pk, approver=root)


def test_a_rejection_ends_the_request(protected_backup: BackupArtifact, approver: Any, second_approver: Any) -> None:
    request = download_request_create(artifact=protected_backup, requested_by=approver, reason="audit")
    logged_in(second_approver).post(
        reverse("backups:download_request_reject", args=[request.pk]), {"reason": "not needed"}
    )
    request.refresh_from_db()
    assert request.status == DownloadRequest.Status.REJECTED
    with pytest.raises(DownloadRefused):
        download_request_approve(request_id=request.pk, approver=user_in_groups("carl", "approver"))


def test_two_approvals_when_the_environment_asks_for_two(
    source_db: SourceDb, approver: Any, second_approver: Any
) -> None:
    backup = backup_taken(source_db.url_env, environment=EnvironmentFactory(protected=True, required_approvals=2))
    request = download_request_create(artifact=backup, requested_by=approver, reason="audit")
    assert download_request_approve(request_id=request.pk, approver=second_approver).status == "awaiting_approval"
    third = user_in_groups("carl", "approver")
    assert download_request_approve(request_id=request.pk, approver=third).status == "approved"


# --- the command line ----------------------------------------------------------------------------------------------


def test_cli_writes_the_file_and_never_overwrites(
    backup: BackupArtifact, operator: Any, tmp_path: Path, artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out" / "backup.dump"
    output.parent.mkdir()
    call_command("download", str(backup.pk), "--output", str(output), "--as", "olga", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert output.read_bytes() == stored_bytes(artifact_dir, backup)
    assert summary["key"] == backup.storage_key and summary["location"] == "default"
    assert sorted(p.name for p in output.parent.iterdir()) == ["backup.dump"]  # no .partial left
    with pytest.raises(CommandError, match="never overwritten"):
        call_command("download", str(backup.pk), "--output", str(output), "--as", "olga")
    assert len(events(AuditEvent.Action.BACKUP_DOWNLOADED)) == 1


def test_cli_refuses_a_viewer(backup: BackupArtifact, viewer: Any, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="may not download backups"):
        call_command("download", str(backup.pk), "--output", str(tmp_path / "x.dump"), "--as", "vera")
    assert not (tmp_path / "x.dump").exists() and not (tmp_path / "x.dump.partial").exists()
    assert events(AuditEvent.Action.BACKUP_DOWNLOAD_REFUSED)


def test_cli_protected_data_request_approve_download_once(
    protected_backup: BackupArtifact, approver: Any, second_approver: Any, tmp_path: Path, artifact_dir: Path
) -> None:
    output = tmp_path / "prod.dump"
    pk = str(protected_backup.pk)
    with pytest.raises(CommandError, match="protected data"):
        call_command("download", pk, "--output", str(output), "--as", "abel")
    call_command("download", pk, "--request", "--reason", "forensics", "--as", "abel")
    request = DownloadRequest.objects.get()
    with pytest.raises(CommandError, match="cannot decide on it"):
        call_command("approve-download", str(request.pk), "--as", "abel")
    call_command("approve-download", str(request.pk), "--as", "bea")
    with pytest.raises(CommandError, match="may not download"):
        call_command("download", pk, "--output", str(output), "--as", "bea")
    call_command("download", pk, "--output", str(output), "--as", "abel")
    assert output.read_bytes() == stored_bytes(artifact_dir, protected_backup)
    with pytest.raises(CommandError, match="protected data"):
        call_command("download", pk, "--output", str(tmp_path / "again.dump"), "--as", "abel")


def test_cli_approval_needs_the_approvers_credential(
    protected_backup: BackupArtifact, approver: Any, second_approver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = download_request_create(artifact=protected_backup, requested_by=approver, reason="audit")
    monkeypatch.setattr("accounts.cli.ask_secret", lambda username, purpose: "wrong")
    with pytest.raises(CommandError):
        call_command("approve-download", str(request.pk), "--as", "bea")
    request.refresh_from_db()
    assert request.status == DownloadRequest.Status.AWAITING_APPROVAL


def test_an_object_store_copy_is_a_short_presigned_redirect_never_audited_as_a_url(
    backup: BackupArtifact, operator: Any, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto stands in for S3 (no network); the console's code path is django-storages' real S3Storage."""
    import boto3
    from moto import mock_aws

    from backups.models import ArtifactCopy
    from inventory.models import StorageLocation

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="dr-offsite")
        boto3.client("s3", region_name="us-east-1").put_object(
            Bucket="dr-offsite", Key=backup.storage_key, Body=stored_bytes(artifact_dir, backup)
        )
        StorageLocation.objects.create(
            name="offsite",
            role=StorageLocation.Role.COPY,
            backend="storages.backends.s3.S3Storage",
            options={"bucket_name": "dr-offsite", "region_name": "us-east-1"},
        )
        ArtifactCopy.objects.create(
            artifact=backup,
            location="offsite",
            status=ArtifactCopy.Status.VERIFIED,
            storage_key=backup.storage_key,
            sha256=backup.sha256,
            size_bytes=backup.size_bytes,
        )
        response = download(logged_in(operator), backup, location="offsite")
    assert response.status_code == 302
    from urllib.parse import parse_qs, urlsplit

    url = urlsplit(response["Location"])
    query = parse_qs(url.query)
    assert "dr-offsite" in url.netloc and url.path.endswith(Path(backup.storage_key).name)
    if "X-Amz-Expires" in query:  # SigV4
        assert query["X-Amz-Expires"] == ["300"]
    else:  # SigV2: the expiry as a time
        assert abs(int(query["Expires"][0]) - (timezone.now().timestamp() + 300)) < 30
    (event,) = events(AuditEvent.Action.BACKUP_DOWNLOADED)
    assert event.details["location"] == "offsite" and event.details["presigned_seconds"] == 300
    assert "Signature" not in json.dumps(event.details) and "http" not in json.dumps(event.details)

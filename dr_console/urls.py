from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.utils.module_loading import import_string
from django.views.i18n import set_language

from dr_console import views

admin.site.site_header = "DR Console"
admin.site.site_title = "DR Console"
admin.site.index_title = "Configuration and history"


# The composition root: every app's URLs, named by dotted string (no import), so dr_console stays the bottom layer.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("", include("overview.probe_urls")),  # readyz, metrics
    path("accounts/login/", import_string("accounts.views.LoginView").as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),  # the login page switches too
    path("restores/", include("restores.urls")),
    path("audit/", include("audit.urls")),
    path("drills/", include("drills.urls")),
    path("reprocess/", include("reprocess.urls")),
    path("queues/", include("queues.urls")),
    path("", include("backups.urls")),
    path("", include("overview.urls")),  # the dashboard, the datastore pages
]

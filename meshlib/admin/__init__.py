"""The admin server: Envoy's admin port for a proxyless mesh, and a live dashboard.

from meshlib.admin import AdminServer

with AdminServer(mesh, port=15000) as admin:   # loopback only unless allow_remote=True
    print(admin.url)   # /, /config_dump, /clusters, /stats, /stats/prometheus, /xds, ...
"""

from ._config_dump import TYPES, config_dump
from ._server import ENDPOINTS, AdminServer
from ._views import clusters_json, xds_json

__all__ = ["ENDPOINTS", "TYPES", "AdminServer", "clusters_json", "config_dump", "xds_json"]

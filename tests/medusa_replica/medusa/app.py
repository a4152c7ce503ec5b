"""Medusa's live settings: module attributes, changed in place by Medusa's UI (replica)."""

APP_VERSION = "1.0.26"
CONFIG_FILE = None
DATA_DIR = ""
WEB_ROOT = ""
WEB_USERNAME = "medusa"
WEB_PASSWORD = "medusa-password"
API_KEY = "0123456789abcdef0123456789abcdef"
ENCRYPTION_SECRET = "medusa-encryption-secret-of-32-chars!"
WEB_USE_GZIP = True
HANDLE_REVERSE_PROXY = False
DEVELOPER = False
WEB_LOG = True
WEB_COOKIE_SECRET = "cookie"

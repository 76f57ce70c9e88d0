"""Store URLs and passwords: connection settings, without a server."""

import pytest

from graphsvc.errors import ConfigError
from graphsvc.store import is_server_url, open_store
from graphsvc.store.arango.store_url import parse_store_url

NO_ENV: dict[str, str] = {}


def test_arangodb_url_gives_http_host_database_and_user():
    settings = parse_store_url("arangodb://alice@db.example:8530/shop", environ=NO_ENV)
    assert settings.hosts == ("http://db.example:8530",)
    assert settings.database == "shop"
    assert settings.username == "alice"
    assert settings.password == ""
    assert not settings.tls


def test_url_defaults_are_root_port_8529_and_system_database():
    settings = parse_store_url("arangodb://localhost", environ=NO_ENV)
    assert settings.hosts == ("http://localhost:8529",)
    assert (settings.username, settings.database) == ("root", "_system")


def test_several_coordinators_in_one_url():
    settings = parse_store_url("arangodb://u@h1:8529,h2,[::1]:9000/db", environ=NO_ENV)
    assert settings.hosts == ("http://h1:8529", "http://h2:8529", "http://[::1]:9000")


def test_arangodbs_uses_https_and_verifies_certificates_by_default():
    settings = parse_store_url("arangodbs://u@db.example/shop", environ=NO_ENV)
    assert settings.hosts == ("https://db.example:8529",)
    assert settings.tls and settings.verify is True


def test_certificate_verification_is_off_only_when_asked_for(tmp_path):
    assert parse_store_url("arangodbs://u@h/db?verify=false", environ=NO_ENV).verify is False
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert parse_store_url("arangodbs://u@h/db", environ={"GRAPHSVC_ARANGO_CA_FILE": str(ca)}).verify == str(ca)
    with pytest.raises(ConfigError, match="no such file"):
        parse_store_url("arangodbs://u@h/db", environ={"GRAPHSVC_ARANGO_CA_FILE": str(tmp_path / "absent.pem")})
    with pytest.raises(ConfigError, match="arangodbs"):
        parse_store_url("arangodb://u@h/db?verify=false", environ=NO_ENV)
    with pytest.raises(ConfigError, match="verify=true or verify=false"):
        parse_store_url("arangodbs://u@h/db?verify=maybe", environ=NO_ENV)


def test_password_in_url_is_refused_without_echoing_it():
    with pytest.raises(ConfigError, match="ARANGO_PASSWORD or pass --password-file") as raised:
        parse_store_url("arangodb://root:s3cret@localhost:8529/db", environ=NO_ENV)
    assert "s3cret" not in str(raised.value)


def test_open_store_refuses_a_password_in_the_url_before_connecting():
    with pytest.raises(ConfigError, match="contains a password") as raised:
        open_store("arangodbs://root:s3cret@localhost:8529/db")
    assert "s3cret" not in str(raised.value)


def test_password_comes_from_arango_password_or_a_password_file(tmp_path):
    assert parse_store_url("arangodb://u@h/db", environ={"ARANGO_PASSWORD": "from-env"}).password == "from-env"
    secret = tmp_path / "password"
    secret.write_text("from file with spaces \n")
    settings = parse_store_url("arangodb://u@h/db", password_file=secret, environ={"ARANGO_PASSWORD": "from-env"})
    assert settings.password == "from file with spaces "
    assert "from file" not in repr(settings)
    with pytest.raises(ConfigError, match="cannot read the password file"):
        parse_store_url("arangodb://u@h/db", password_file=tmp_path / "absent", environ=NO_ENV)


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://h/db", "not an ArangoDB URL"),
        ("arangodb://u@/db", "no host"),
        ("arangodb://u@h:99999/db", "bad host"),
        ("arangodb://u@h/db/extra", "more than a database"),
        ("arangodb://u@h/db?timeout=3", "unknown option"),
    ],
)
def test_malformed_urls_are_config_errors(url, message):
    with pytest.raises(ConfigError, match=message):
        parse_store_url(url, environ=NO_ENV)


def test_server_urls_are_told_apart_from_embedded_paths():
    assert is_server_url("arangodb://root@localhost:8529/db")
    assert is_server_url("ARANGODBS://h/db")
    assert not is_server_url("/data/store.duckdb")
    assert not is_server_url("duckdb:///data/store.duckdb")

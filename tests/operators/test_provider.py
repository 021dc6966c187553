from forgeline import get_provider_info


def test_airflow_providers_manager_discovers_forgeline():
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "forgeline" in providers
    info = providers["forgeline"].data
    modules = [m for entry in info["operators"] for m in entry["python-modules"]]
    assert "forgeline.operators" in modules
    assert {k: info[k] for k in get_provider_info()} == get_provider_info()

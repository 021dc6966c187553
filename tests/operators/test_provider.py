from forgeline import get_provider_info


def test_airflow_providers_manager_discovers_forgeline():
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "forgeline" in providers
    info = providers["forgeline"].data
    modules = [m for entry in info["operators"] for m in entry["python-modules"]]
    assert "forgeline.operators" in modules
    assert {k: info[k] for k in get_provider_info()} == get_provider_info()


def test_the_ray_connection_type_hook_trigger_and_links_are_listed():
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManagerTaskRuntime()  # where tasks look hooks up (the Task SDK)
    manager.initialize_providers_hooks()
    assert manager.hooks["ray"].hook_class_name == "forgeline.operators.hooks.RayHook"
    info = get_provider_info()
    triggers = [m for entry in info["triggers"] for m in entry["python-modules"]]
    assert triggers == ["forgeline.operators.triggers"]
    assert "forgeline.operators.links.RayJobLink" in info["extra-links"]

"""The service's routes, one router per resource; create_app includes them in this order."""

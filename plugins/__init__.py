"""sprintd's built-in plugins: orders, prices, payments, dashboard and asgi."""

"""sprintd's built-in plugins: orders, prices, payments and dashboard."""

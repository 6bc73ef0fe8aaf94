"""The flows of PRODUCT 4: registration (4.1) and enrollment (4.2)."""

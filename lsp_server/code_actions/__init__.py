"""code_actions"""

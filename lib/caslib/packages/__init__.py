"""packages"""
